"""cab's kernels from Python: torch.ops.load_library + torch.ops.cab.selective_scan_fwd against a plain loop.

Usage: python3 python_ops_test.py path/to/libcab_kernels.so   (exit code 0 = passed; CUDA cases need a GPU)
"""
import sys

import torch


def loop_scan(u, delta, A, B, C, D, z, delta_bias):
    """The selective scan written as the textbook recurrence, in float64."""
    u, delta, A, B, C, D, z, delta_bias = (t.double().cpu() for t in (u, delta, A, B, C, D, z, delta_bias))
    delta = torch.nn.functional.softplus(delta + delta_bias[None, :, None])
    batch, dim, length = u.shape
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, -1) * torch.nn.functional.silu(z), h


def main():
    torch.ops.load_library(sys.argv[1])
    torch.manual_seed(0)
    batch, dim, length, n = 2, 8, 13, 16
    args = dict(u=torch.randn(batch, dim, length), delta=torch.rand(batch, dim, length) - 2.0,
                A=-torch.rand(dim, n) - 0.5, B=torch.randn(batch, n, length), C=torch.randn(batch, n, length),
                D=torch.randn(dim), z=torch.randn(batch, dim, length), delta_bias=torch.rand(dim) * 0.1)
    want_y, want_h = loop_scan(**args)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    failures = 0
    for device in devices:
        a = {k: v.to(device) for k, v in args.items()}
        y, h = torch.ops.cab.selective_scan_fwd(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],
                                                a["delta_bias"], True, None)
        err_y = ((y.double().cpu() - want_y).abs().max() / want_y.abs().max()).item()
        err_h = ((h.double().cpu() - want_h).abs().max() / want_h.abs().max()).item()
        ok = err_y < 1e-5 and err_h < 1e-5
        failures += not ok
        print(f"{device}: max relative error y {err_y:.2e}, final state {err_h:.2e}: {'ok' if ok else 'FAILED'}")
    if not torch.cuda.is_available():
        print("cuda: skipped (no CUDA device)")
    print(f"{len(devices) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
