"""cab's kernels from Python: torch.ops.load_library + torch.ops.cab.selective_scan_fwd (forward and, through the
op's autograd kernel, backward), torch.ops.cab.bi_selective_scan_fwd, Mamba-2's torch.ops.cab.ssd_scan_fwd and
torch.ops.cab.causal_conv1d against plain loops.

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


def loop_ssd(x, dt, A, B, C, D, z, dt_bias):
    """Mamba-2's SSD as the textbook recurrence per head ([P, N] state, scalar decay), in float64."""
    x, dt, A, B, C, D, z, dt_bias = (t.double().cpu() for t in (x, dt, A, B, C, D, z, dt_bias))
    dt = torch.nn.functional.softplus(dt + dt_bias)  # [b, L, H]
    batch, length, heads, p = x.shape
    per_group = heads // B.shape[2]
    Bh, Ch = B.repeat_interleave(per_group, 2), C.repeat_interleave(per_group, 2)  # [b, L, H, N]
    s = torch.zeros(batch, heads, p, B.shape[3], dtype=torch.float64)
    ys = []
    for t in range(length):
        d = dt[:, t, :, None, None]
        s = torch.exp(d * A[None, :, None, None]) * s + d * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        ys.append((s * Ch[:, t, :, None, :]).sum(-1) + D[None, :, None] * x[:, t])
    return torch.stack(ys, 1) * torch.nn.functional.silu(z), s


def check_ssd(device):
    """ssd_scan_fwd and the gradients of every input vs autograd through the float64 loop (fp32, 1e-5 relative)."""
    torch.manual_seed(2)
    batch, length, heads, p, groups, n = 2, 11, 4, 3, 2, 8
    args = dict(x=torch.randn(batch, length, heads, p), dt=torch.rand(batch, length, heads) - 2.0,
                A=-torch.rand(heads) - 0.5, B=torch.randn(batch, length, groups, n),
                C=torch.randn(batch, length, groups, n), D=torch.randn(heads), z=torch.randn(batch, length, heads, p),
                dt_bias=torch.rand(heads) * 0.1)
    names = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")
    ours = {k: v.detach().to(device).requires_grad_(True) for k, v in args.items()}
    refs = {k: v.detach().double().requires_grad_(True) for k, v in args.items()}
    y, s = torch.ops.cab.ssd_scan_fwd(*(ours[k] for k in names), True, None)
    y_ref, s_ref = loop_ssd(**refs)
    wy, ws = torch.randn(y_ref.shape), torch.randn(s_ref.shape)
    ((y * wy.to(device)).sum() + (s * ws.to(device)).sum()).backward()
    ((y_ref * wy.double()).sum() + (s_ref * ws.double()).sum()).backward()
    err_y = max(relative(y, y_ref.detach()), relative(s, s_ref.detach()))
    return err_y, max(relative(ours[k].grad, refs[k].grad) for k in names)


def loop_conv(x, weight, bias, reverse, silu):
    """The depthwise causal conv1d as its sum, in float64: out[b, c, t] = bias[c] + sum_k w[c, k] x[b, c, t - (K-1) + k]
    (reverse: x[b, c, t + (K-1) - k]), zero outside the sequence, then silu."""
    x, weight, bias = (t.double().cpu() for t in (x, weight, bias))
    length, width = x.shape[2], weight.shape[-1]
    w = weight.reshape(weight.shape[0], width)
    out = bias[None, :, None].expand(x.shape[0], -1, length).clone()
    for t in range(length):
        for k in range(width):
            s = t + (width - 1) - k if reverse else t - (width - 1) + k
            if 0 <= s < length:
                out[:, :, t] = out[:, :, t] + w[None, :, k] * x[:, :, s]
    return torch.nn.functional.silu(out) if silu else out


def check_conv(device, reverse, silu):
    """causal_conv1d and the gradients of x, weight and bias vs autograd through the float64 loop (fp32, 1e-5)."""
    torch.manual_seed(3)
    batch, dim, length, width = 2, 5, 9, 4
    args = dict(x=torch.randn(batch, dim, length), weight=torch.randn(dim, 1, width), bias=torch.randn(dim))
    ours = {k: v.detach().to(device).requires_grad_(True) for k, v in args.items()}
    refs = {k: v.detach().double().requires_grad_(True) for k, v in args.items()}
    y = torch.ops.cab.causal_conv1d(ours["x"], ours["weight"], ours["bias"], reverse, silu)
    y_ref = loop_conv(**refs, reverse=reverse, silu=silu)
    w = torch.randn(y_ref.shape)
    (y * w.to(device)).sum().backward()
    (y_ref * w.double()).sum().backward()
    return relative(y, y_ref.detach()), max(relative(ours[k].grad, refs[k].grad) for k in args)


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
    for device in devices:
        err_y, err_grad = check_ssd(device)
        ok = err_y < 1e-5 and err_grad < 1e-5
        failures += not ok
        checks += 1
        print(f"{device}, ssd: max relative error y/state {err_y:.2e}, gradients {err_grad:.2e}: {'ok' if ok else 'FAILED'}")
    for device in devices:
        for reverse in (False, True):
            for silu in (True, False):
                err_y, err_grad = check_conv(device, reverse, silu)
                ok = err_y < 1e-5 and err_grad < 1e-5
                failures += not ok
                checks += 1
                print(f"{device}, causal_conv1d reverse={reverse} silu={silu}: max relative error y {err_y:.2e}, "
                      f"gradients {err_grad:.2e}: {'ok' if ok else 'FAILED'}")
    if not torch.cuda.is_available():
        print("cuda: skipped (no CUDA device)")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
