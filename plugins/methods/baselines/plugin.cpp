// Entry point of the method-baselines library: attention-weight reuse, MOHAWK and TransMamba.
#include <cab/plugin/abi.h>

#include "baselines.h"

CAB_PLUGIN("method-baselines", "0.1.0",
           CAB_FACTORY(method, "attn-weight-reuse",
                       "student initialized from the teacher's attention weights (C←W_Q, B←W_K, x←W_V, out←W_O), "
                       "then soft KD", cab::baselines::describe_reuse, cab::baselines::create_reuse),
           CAB_FACTORY(method, "mohawk",
                       "MOHAWK: mixing matrix vs attention, then hidden states (each layer fed the teacher's input), "
                       "then end-to-end KD", cab::baselines::describe_mohawk, cab::baselines::create_mohawk),
           CAB_FACTORY(method, "transmamba",
                       "TransMamba: weight subcloning, feature projectors, adaptive bidirectional distillation",
                       cab::baselines::describe_transmamba, cab::baselines::create_transmamba))
