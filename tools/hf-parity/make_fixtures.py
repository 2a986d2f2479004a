"""Writes the Hugging Face parity fixtures cab's model tests load: for each family, a tiny randomly
initialized `transformers` model (model.safetensors + config.json, via save_pretrained) and
reference.safetensors holding a fixed input, the fp32 logits and the per-layer hidden states (and attention
probabilities where the model returns them). Needs no download: models are built from configs.

Usage (with a Python that has torch and transformers, e.g. the GPU host's):
    python3 tools/hf-parity/make_fixtures.py OUT_DIR      # then copy OUT_DIR/* to tests/fixtures/hf/
"""
import json
import sys
import traceback
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file


def families():
    t = transformers
    ids = lambda: torch.randint(0, 96, (2, 12))
    yield "vit", t.ViTConfig(image_size=28, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, num_labels=10, qkv_bias=True), \
        t.ViTForImageClassification, lambda: torch.randn(2, 1, 28, 28)
    yield "gpt2", t.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=96, n_positions=32), t.GPT2LMHeadModel, ids
    yield "llama", t.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=96, max_position_embeddings=32,
                                 tie_word_embeddings=False), t.LlamaForCausalLM, ids
    yield "phi", t.PhiConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             vocab_size=96, max_position_embeddings=32, partial_rotary_factor=0.5), \
        t.PhiForCausalLM, ids
    yield "mamba", t.MambaConfig(hidden_size=32, state_size=8, num_hidden_layers=2, vocab_size=96, expand=2,
                                 conv_kernel=4, time_step_rank=4), t.MambaForCausalLM, ids
    yield "mamba2", t.Mamba2Config(hidden_size=32, state_size=16, num_hidden_layers=2, vocab_size=96, expand=2,
                                   head_dim=16, num_heads=4, n_groups=1, conv_kernel=4, chunk_size=8), \
        t.Mamba2ForCausalLM, ids


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "families": {}}
    for name, config, cls, make_input in families():
        try:
            torch.manual_seed(0)
            try:
                config._attn_implementation = "eager"  # attention probabilities are returned only in eager mode
            except Exception:
                pass
            model = cls(config).eval().float()
            with torch.no_grad():
                # Non-trivial norms and biases, so parity does not hide behind ones and zeros.
                for pname, p in model.named_parameters():
                    if p.dim() == 1:
                        p.add_(0.1 * torch.randn_like(p))
            x = make_input()
            with torch.no_grad():
                kwargs = {"output_hidden_states": True}
                if name not in ("mamba", "mamba2"):
                    kwargs["output_attentions"] = True
                result = model(x, **kwargs)
            d = out / name
            model.save_pretrained(d, safe_serialization=True)
            tensors = {"input": x.contiguous(), "logits": result.logits.float().contiguous()}
            for i, h in enumerate(result.hidden_states or []):
                tensors[f"hidden_states.{i}"] = h.float().contiguous()
            for i, a in enumerate(getattr(result, "attentions", None) or []):
                if a is not None:
                    tensors[f"attentions.{i}"] = a.float().contiguous()
            save_file(tensors, str(d / "reference.safetensors"))
            meta["families"][name] = {"class": cls.__name__, "logits_shape": list(result.logits.shape),
                                      "tensors": sorted(tensors)}
            print(f"{name}: ok, logits {tuple(result.logits.shape)}, {len(tensors)} reference tensors")
        except Exception:
            meta["families"][name] = {"error": traceback.format_exc()}
            print(f"{name}: FAILED\n{traceback.format_exc()}")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
