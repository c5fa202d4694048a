"""The Triton kernels of the fast path against the torch formulas, run by Triton's CPU interpreter
(TRITON_INTERPRET=1 must be set before triton is imported, hence a subprocess)."""
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from bcos_clip.nn import fused, fused_triton as ft

    torch.manual_seed(0)
    worst = 0.0

    def rel(a, r):
        return ((a - r).abs().max() / r.abs().max().clamp_min(1e-12)).item()

    def check(z, s, dim, b):
        global worst
        y = ft.scale_fwd(z, s, b, dim, 1e-6)
        yr = fused._scale_forward_torch(z, s, b, 1e-6)
        assert y.stride() == z.stride(), (y.stride(), z.stride())
        errs = [rel(y, yr)]
        for g in (torch.randn_like(yr), torch.ones(()).expand_as(yr)):  # dense and expanded grads
            gz, gs = ft.scale_bwd(g, yr, s, b, dim, 1e-6)
            gzr, gsr = fused._scale_backward_torch(g, yr, s, b, dim, 1e-6)
            errs += [rel(gz, gzr), rel(gs, gsr)]
            gz, gs = ft.scale_bwd(g, z, s, b, dim, 1e-6, from_z=True)  # fp16 keeps z (nn.fused.saves_z)
            gzr, gsr = fused._scale_backward_torch(g, z, s, b, dim, 1e-6, from_z=True)
            errs += [rel(gz, gzr), rel(gs, gsr)]
        worst = max([worst] + errs)

    for b in (2.0, 2.5):
        x = torch.randn(3, 37, 5, 6)
        s = ft.sumsq(x, 1)
        for xx in (x, x.to(memory_format=torch.channels_last)):
            worst = max(worst, rel(ft.sumsq(xx, 1), x.square().sum(1, keepdim=True)))
        z = torch.randn(3, 150, 5, 6)
        check(z, s, 1, b)
        check(z.to(memory_format=torch.channels_last), s, 1, b)
        xl = torch.randn(4, 7, 300)
        sl = ft.sumsq(xl, -1)
        worst = max(worst, rel(sl, xl.square().sum(-1, keepdim=True)))
        check(torch.randn(4, 7, 200), sl, -1, b)
    from bcos_clip.nn.fused_torch import TorchKernels
    tk = TorchKernels()
    for b in (2.0, 2.5):  # nn.fused_conv_bn: the scale kernel's statistics, bn_finalize, the shifted backward
        for shape in ((3, 150, 5, 6), (2, 20, 70, 3)):
            z = torch.randn(*shape) * 2 + 0.5
            s = ft.sumsq(torch.randn(shape[0], 7, *shape[2:]), 1)
            for zz in (z, z.to(memory_format=torch.channels_last)):
                y, part = ft.scale_fwd_stats(zz, s, b, 1e-6)
                yr, partr = tk.scale_fwd_stats(zz, s, b, 1e-6)
                assert y.stride() == zz.stride() and part[0].shape[0] == ft.stats_rows(zz)
                w, rv = torch.rand(shape[1]) + 0.5, torch.rand(shape[1]) + 0.5
                rv2 = rv.clone()
                total = y.numel() // shape[1]
                vec = ft.bn_finalize(part, w, rv, 0.1, 1e-5, total)
                vecr = tk.bn_finalize(partr, w, rv2, 0.1, 1e-5, total)
                errs = [rel(y, yr), rel(vec, vecr), rel(rv, rv2)]
                g = torch.randn_like(yr)
                shift = (torch.randn(shape[1]), torch.randn(shape[1]), vecr[2].contiguous(),
                         vecr[0].contiguous(), 1.0 / total)
                for from_z in (False, True):
                    t_ = zz if from_z else yr
                    out = ft.scale_bwd(g, t_, s, b, 1, 1e-6, from_z, shift=shift)
                    ref = tk.scale_bwd(g, t_, s, b, 1, 1e-6, from_z, shift=shift)
                    errs += [rel(o, r) for o, r in zip(out, ref)]
                worst = max([worst] + errs)
    print("WORST", worst)
""")


@pytest.mark.slow
def test_triton_kernels_match_torch_formulas_in_interpreter():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    worst = float(out.stdout.split("WORST")[-1])
    assert worst < 1e-5, worst
