"""cab's kernels from Python: torch.ops.load_library + torch.ops.cab.selective_scan_fwd (forward and, through the
op's autograd kernel, backward) and torch.ops.cab.bi_selective_scan_fwd against a plain loop.

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


def flip_time(args):
    """The inputs of a reverse-time scan as a forward scan of the flipped sequence sees them."""
    out = dict(args)
    for k in ("u", "delta", "z", "B", "C"):
        out[k] = args[k].flip(-1)
    return out


def relative(got, want):
    return ((got.double().cpu() - want).abs().max() / want.abs().max()).item()


def check_gradients(device, bidirectional):
    """Gradients of every input through the op vs autograd through the float64 loop (1e-5 relative, fp32)."""
    torch.manual_seed(1)
    batch, dim, length, n = 2, 8, 13, 16
    def make():
        return dict(u=torch.randn(batch, dim, length), delta=torch.rand(batch, dim, length) - 2.0,
                    A=-torch.rand(dim, n) - 0.5, B=torch.randn(batch, n, length), C=torch.randn(batch, n, length),
                    D=torch.randn(dim), z=torch.randn(batch, dim, length), delta_bias=torch.rand(dim) * 0.1)
    dirs = [make()] + ([make()] if bidirectional else [])
    wy, wh = torch.randn(batch, dim, length), torch.randn(batch, dim, n)
    ours = [{k: v.detach().to(device).requires_grad_(True) for k, v in d.items()} for d in dirs]
    refs = [{k: v.detach().double().requires_grad_(True) for k, v in d.items()} for d in dirs]
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    if bidirectional:
        f, b = ours
        y, h, _ = torch.ops.cab.bi_selective_scan_fwd(*(f[k] for k in names), None, *(b[k] for k in names), None,
                                                      True, 0.5)
        y_f, h_ref = loop_scan(**refs[0])
        y_b, _ = loop_scan(**flip_time(refs[1]))
        y_ref = 0.5 * (y_f + y_b.flip(-1))
    else:
        a = ours[0]
        y, h = torch.ops.cab.selective_scan_fwd(*(a[k] for k in names), True, None)
        y_ref, h_ref = loop_scan(**refs[0])
    ((y * wy.to(device)).sum() + (h * wh.to(device)).sum()).backward()
    ((y_ref * wy.double()).sum() + (h_ref * wh.double()).sum()).backward()
    missing = [k for o, r in zip(ours, refs) for k in names if o[k].grad is None or r[k].grad is None]
    assert not missing, f"no gradient for {missing}"
    worst = max(relative(o[k].grad, r[k].grad) for o, r in zip(ours, refs) for k in names)
    return relative(y, y_ref.detach()), worst


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
    checks = len(devices)
    for device in devices:
        for bidirectional in (False, True):
            err_y, err_grad = check_gradients(device, bidirectional)
            ok = err_y < 1e-5 and err_grad < 1e-5
            failures += not ok
            checks += 1
            kind = "bidirectional" if bidirectional else "one direction"
            print(f"{device}, {kind}: max relative error y {err_y:.2e}, gradients {err_grad:.2e}: "
                  f"{'ok' if ok else 'FAILED'}")
    if not torch.cuda.is_available():
        print("cuda: skipped (no CUDA device)")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
