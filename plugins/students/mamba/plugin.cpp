// The `student-mamba` plugin library: its entry point listing the Mamba-1 students.
#include <cab/plugin/abi.h>

#include "mamba_common.h"

CAB_PLUGIN("student-mamba", "0.1.0",
           CAB_FACTORY(student, "mamba", "Mamba-1 causal LM (Hugging Face names and checkpoints)",
                       cab::mamba::describe_mamba, cab::mamba::create_mamba),
           CAB_FACTORY(student, "vim", "Vim: bidirectional Mamba-1 image classifier, class token in the middle",
                       cab::mamba::describe_vim, cab::mamba::create_vim))
