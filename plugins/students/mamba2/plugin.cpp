// Entry point of the student-mamba2 library: the Mamba-2 LM (`mamba2`) and MOHAWK's Phi-Mamba (`phi-mamba`).
#include <cab/plugin/abi.h>

#include "factories.h"

CAB_PLUGIN("student-mamba2", "0.1.0",
           CAB_FACTORY(student, "mamba2", "Mamba-2 causal LM (Hugging Face Mamba2ForCausalLM names and checkpoints)",
                       cab::mamba2::describe_mamba2, cab::mamba2::create_mamba2),
           CAB_FACTORY(student, "phi-mamba", "MOHAWK's Phi-Mamba: Phi-1.5 with discrete Mamba-2 mixers (goombalab names)",
                       cab::mamba2::describe_phi_mamba, cab::mamba2::create_phi_mamba))
