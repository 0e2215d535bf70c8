#!/usr/bin/env python
"""Per-op speed of the CUDA kernels against the reference ops, at the calls a real network makes.

    python bench/bench_ops.py                                   # StyleGAN2 512^2 and 1024^2, batch 1, fp32
    python bench/bench_ops.py --kind stylegan2 stylegan3 --resolution 512 1024 --batch 1 8 \\
        --dtype fp32 fp16 --backward --write                   # and append the table to BENCHMARKS.md
    python bench/bench_ops.py --list --resolution 1024          # just print the recorded calls (no GPU)

How: the generator is built on the `meta` device and run once with every op call recorded (shapes, filter
sizes, up/down/padding, gain, clamp), so the benchmark uses exactly the calls of that architecture; the
filter values do not matter for speed and are random.  Each distinct call is timed with CUDA events, the
reference (SGVIS_OPS=ref) and the kernels (SGVIS_OPS=cuda) interleaved round by round, median of rounds;
`--backward` times forward + backward.  The table gives, per op, the time one frame spends in it (sum over
its calls, times their count) for both paths and the speed-up, and the largest relative difference of the
outputs (max|diff| / max|ref|).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cuda_ops import _dispatch, _kernels, bias_act_ref, filtered_lrelu_ref, upfirdn2d_ref  # noqa: E402

OPS = ("upfirdn2d", "bias_act", "filtered_lrelu")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------
# Recording the calls a network makes

def _describe(v):
    if torch.is_tensor(v):
        return ("tensor", tuple(v.shape))
    if isinstance(v, (list, tuple)):
        return tuple(_describe(i) for i in v)
    if hasattr(v, "item") and not isinstance(v, (int, float)):  # numpy scalars
        return v.item()
    return v


def record_calls(kind: str, resolution: int, channel_base: int = 32768, channel_max: int = 512,
                 device: str = "meta") -> list[dict]:
    """Distinct op calls of one synthesis forward pass at batch 1: [{op, x, args, kwargs, count}].

    On the `meta` device nothing is computed (the first use imports torch's meta kernels, a few seconds);
    device="cpu" suits small networks."""
    from stylegan.generator import Generator
    calls: "OrderedDict[tuple, dict]" = OrderedDict()
    refs = {"upfirdn2d": upfirdn2d_ref, "bias_act": bias_act_ref, "filtered_lrelu": filtered_lrelu_ref}
    saved = {op: getattr(_kernels, op) for op in OPS}
    saved_use = _dispatch.use_cuda

    def recorder(op):
        def f(x, *args, **kwargs):
            key = (op, tuple(x.shape), _describe(args), tuple(sorted((k, _describe(v)) for k, v in kwargs.items())))
            if key in calls:
                calls[key]["count"] += 1
            else:
                calls[key] = dict(op=op, x=tuple(x.shape), args=_describe(args),
                                  kwargs={k: _describe(v) for k, v in kwargs.items()}, count=1)
            return refs[op](x, *args, **kwargs)
        return f

    try:
        _dispatch.use_cuda = lambda op, x, blocker=None: True
        for op in OPS:
            setattr(_kernels, op, recorder(op))
        G = Generator(kind, z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                      synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max)).to(device)
        with torch.no_grad():
            G.synthesis(torch.zeros(1, G.num_ws, 512, device=device), noise_mode="const")
    finally:
        _dispatch.use_cuda = saved_use
        for op, fn in saved.items():
            setattr(_kernels, op, fn)
    return list(calls.values())


def _materialise(v, device, gen):
    """Recorded argument -> real value: tensors become random (normalised filters for 1-D / 2-D)."""
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "tensor":
        shape = v[1]
        t = torch.rand(shape, generator=gen, device="cpu") + 0.1
        return (t / t.sum()).to(device) if len(shape) in (1, 2) else t.to(device)
    if isinstance(v, tuple):
        return [_materialise(i, device, gen) for i in v]
    return v


def build_call(call: dict, batch: int, dtype: torch.dtype, device: str):
    gen = torch.Generator().manual_seed(0)
    shape = (batch,) + tuple(call["x"][1:])
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    args = [_materialise(a, device, gen) for a in call["args"]]
    kwargs = {k: _materialise(v, device, gen) for k, v in call["kwargs"].items()}
    # Biases come in x's dtype, as the networks pass them (bias_act(x, b), filtered_lrelu(x, fu, fd, b)).
    slot = {"bias_act": 0, "filtered_lrelu": 2}.get(call["op"])
    if slot is not None and len(args) > slot and torch.is_tensor(args[slot]):
        args[slot] = args[slot].to(dtype)
    if torch.is_tensor(kwargs.get("b")):
        kwargs["b"] = kwargs["b"].to(dtype)
    return x, args, kwargs


# ---------------------------------------------------------------------------------------------------------
# Timing

def _fn(op):
    import cuda_ops
    return getattr(cuda_ops, op)


def time_call(op, x, args, kwargs, mode, iters, backward):
    os.environ["SGVIS_OPS"] = mode
    fn = _fn(op)
    if backward:
        xg = x.detach().requires_grad_()

        def step():
            y = fn(xg, *args, **kwargs)
            y.backward(torch.ones_like(y))
    else:
        def step():
            fn(x, *args, **kwargs)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    with torch.set_grad_enabled(backward):
        for _ in range(iters):
            step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def bench(args) -> list[dict]:
    rows = []
    for kind in args.kind:
        for res in args.resolution:
            calls = record_calls(kind, res, args.channel_base, args.channel_max)
            for batch in args.batch:
                for dname in args.dtype:
                    dtype = DTYPES[dname]
                    per_op = {op: dict(ref=0.0, cuda=0.0, calls=0, err=0.0) for op in OPS}
                    for call in calls:
                        if call["op"] not in args.ops:
                            continue
                        x, a, kw = build_call(call, batch, dtype, "cuda")
                        os.environ["SGVIS_OPS"] = "ref"
                        with torch.no_grad():
                            ref = _fn(call["op"])(x, *a, **kw)
                            os.environ["SGVIS_OPS"] = "cuda"
                            out = _fn(call["op"])(x, *a, **kw)
                        diff = (out.double() - ref.double()).abs().max()
                        err = float(diff / ref.double().abs().max().clamp_min(1e-30))
                        times = {"ref": [], "cuda": []}
                        for mode in ("ref", "cuda"):
                            time_call(call["op"], x, a, kw, mode, max(1, args.warmup), args.backward)
                        for _ in range(args.rounds):
                            for mode in ("ref", "cuda"):
                                times[mode].append(time_call(call["op"], x, a, kw, mode, args.iters, args.backward))
                        p = per_op[call["op"]]
                        p["ref"] += statistics.median(times["ref"]) * call["count"]
                        p["cuda"] += statistics.median(times["cuda"]) * call["count"]
                        p["calls"] += call["count"]
                        p["err"] = max(p["err"], err)
                    for op, p in per_op.items():
                        if p["calls"]:
                            rows.append(dict(kind=kind, resolution=res, batch=batch, dtype=dname, op=op,
                                             calls=p["calls"], ref_ms=p["ref"], cuda_ms=p["cuda"],
                                             speedup=p["ref"] / max(p["cuda"], 1e-9), rel_err=p["err"]))
    os.environ.pop("SGVIS_OPS", None)
    return rows


def table(rows, backward: bool) -> str:
    head = ("| network | res | batch | dtype | op | calls/frame | reference ms | CUDA ms | speed-up | max rel. diff |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['resolution']} | {r['batch']} | {r['dtype']} | {r['op']} | {r['calls']} | "
                     f"{r['ref_ms']:.3f} | {r['cuda_ms']:.3f} | {r['speedup']:.2f}x | {r['rel_err']:.1e} |")
    what = "forward + backward" if backward else "forward"
    return f"Per frame, {what}, summed over the op's calls:\n\n" + "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", nargs="+", default=["stylegan2"], choices=["stylegan2", "stylegan3"])
    ap.add_argument("--resolution", nargs="+", type=int, default=[512, 1024])
    ap.add_argument("--channel-base", type=int, default=32768)
    ap.add_argument("--channel-max", type=int, default=512)
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--dtype", nargs="+", default=["fp32"], choices=list(DTYPES))
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backward", action="store_true", help="time forward + backward")
    ap.add_argument("--list", action="store_true", help="print the recorded calls and exit (no GPU needed)")
    ap.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    args = ap.parse_args(argv)

    if args.list:
        for kind in args.kind:
            for res in args.resolution:
                calls = record_calls(kind, res, args.channel_base, args.channel_max)
                print(f"{kind} {res}x{res}: {sum(c['count'] for c in calls)} op calls, {len(calls)} distinct")
                for c in calls:
                    print(f"  {c['count']:3d} x {c['op']:<15} x={c['x']} args={c['args']} {c['kwargs']}")
        return 0
    if not torch.cuda.is_available():
        print("bench_ops.py needs a CUDA GPU (use --list to see the calls without one)", file=sys.stderr)
        return 2
    from cuda_ops import _build
    if _build.load_extension(warn=False) is None:
        print(f"the CUDA ops are unavailable: {_build.failure()}", file=sys.stderr)
        return 2
    rows = bench(args)
    text = table(rows, args.backward)
    print(text)
    if args.write:
        dev = torch.cuda.get_device_name()
        header = (f"\n## CUDA ops vs reference ({datetime.date.today().isoformat()}, {dev}, torch {torch.__version__}, "
                  f"CUDA {torch.version.cuda}, {platform.node()})\n\n`python bench/bench_ops.py "
                  f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n\n")
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "BENCHMARKS.md")
        with open(path, "a") as fh:
            fh.write(header + text + "\n")
        print(f"appended to {os.path.normpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
