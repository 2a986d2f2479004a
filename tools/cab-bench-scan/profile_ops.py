"""Per-kernel GPU times of cab's SSD op (forward, and forward + backward) through torch.profiler, on
PERFORMANCE.md's Mamba-2 shape: which kernel of the chunked form costs what. A development aid; cab-bench-scan
gives the figures that count.

Usage: python3 profile_ops.py path/to/libcab_kernels.so [B L H P G N]
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile


def main():
    torch.ops.load_library(sys.argv[1])
    b, length, heads, head_dim, groups, n = (int(v) for v in (sys.argv[2:8] or (8, 2048, 24, 64, 1, 128)))
    dev, bf16 = "cuda", torch.bfloat16
    torch.manual_seed(0)
    x = torch.randn(b, length, heads, head_dim, device=dev, dtype=bf16, requires_grad=True)
    z = torch.randn_like(x, requires_grad=True)
    dt = (torch.rand(b, length, heads, device=dev) * 0.5 - 3).to(bf16).requires_grad_()
    A = (-torch.rand(heads, device=dev) * 4 - 0.5).requires_grad_()
    B = torch.randn(b, length, groups, n, device=dev, dtype=bf16, requires_grad=True)
    C = torch.randn_like(B, requires_grad=True)
    D = torch.randn(heads, device=dev, requires_grad=True)
    bias = (torch.rand(heads, device=dev) * 0.2).requires_grad_()
    grad = torch.randn_like(x)

    def fwd():
        return torch.ops.cab.ssd_scan_fwd(x, dt, A, B, C, D, z, bias, True, None)[0]

    for name, step in (("forward", fwd), ("forward+backward", lambda: fwd().backward(grad))):
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        print(f"== {name}, 5 iterations")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    main()
