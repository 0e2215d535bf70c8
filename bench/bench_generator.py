#!/usr/bin/env python
"""Generator synthesis benchmark: exact reference path vs the fast path's variants.

    python bench/bench_generator.py --kind stylegan2 --resolution 256 --channel-base 16384 \\
        --channel-max 512 --batch 1 8 --iters 3 --rounds 5 --json out.json

Reports, per batch size, ms/frame and frames/s (best round), the speed-up over ``reference`` measured
in the same run (best and median rounds; variants are interleaved round by round, so machine load hits
all of them alike), the process CPU time per frame (user+sys of all threads: insensitive to being
descheduled on a shared machine, and equal to wall time for one thread on an idle one) with its
speed-up, and how far each variant's images are from the exact path: max|diff| / max|ref| and
mean|diff| / mean|ref|.

Variants (``--variants``, default: all that apply to the device):
  reference      G.synthesis(ws) as loaded: the exact ops, fp32, contiguous, default settings
                 (fused modulated convolution at inference).  On CUDA with force_fp32=True.
  unfused        exact ops, fused_modconv=False (modulate activations instead of weights)
  native_bf16    exact ops with compute_dtype=bfloat16 (CPU) / native fp16 layers (CUDA: native_fp16)
  fast           stylegan.fast.FastSynthesis, fp32, contiguous: re-expressed ops only
  channels_last  fast + channels_last
  fused          fast + channels_last, weights modulated in every layer at batch 1
  activations    fast + channels_last, activations modulated in every layer
  bf16           fast + channels_last + bf16 (CPU) ;  fp16: the checkpoint's fp16 layers (CUDA)
  compile        fast + channels_last + torch.compile (compile time reported separately)
  auto           FastSynthesis(G) defaults (what the app uses)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

# As the app does (sgvis/__init__.py): OpenMP threads that spin while waiting steal the cores from other
# processes and, on a busy machine, from each other.  Only effective before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stylegan import Generator, load  # noqa: E402
from stylegan.fast import FastSynthesis, cpu_bf16_support, cpu_model  # noqa: E402

CPU_VARIANTS = ["reference", "unfused", "native_bf16", "fast", "channels_last", "fused", "activations",
                "bf16", "compile", "auto"]
CUDA_VARIANTS = ["reference", "unfused", "native_fp16", "fast", "channels_last", "fused", "activations",
                 "bf16", "fp16", "compile", "auto"]


def build_generator(args, device) -> Generator:
    if args.model:
        return load(args.model, device=device)
    torch.manual_seed(args.seed)
    kwargs = dict(channel_base=args.channel_base, channel_max=args.channel_max)
    if args.kind == "stylegan3":
        kwargs.update(num_fp16_res=args.num_fp16_res)
        if args.radial:
            kwargs.update(use_radial_filters=True, conv_kernel=1)
    else:
        kwargs.update(num_fp16_res=args.num_fp16_res, conv_clamp=256 if args.num_fp16_res else None)
    G = Generator(args.kind, z_dim=512, w_dim=512, img_resolution=args.resolution, synthesis_kwargs=kwargs)
    return G.eval().requires_grad_(False).to(device)


def make_variant(name: str, G, device):
    """-> (callable ws -> fp32 images, description)."""
    S = G.synthesis
    cuda = device.type == "cuda"
    if name == "reference":
        return (lambda ws: S(ws, noise_mode="const", force_fp32=cuda)), "exact ops, fp32, contiguous"
    if name == "unfused":
        return (lambda ws: S(ws, noise_mode="const", force_fp32=cuda, fused_modconv=False)), \
            "exact ops, fused_modconv=False"
    if name == "native_bf16":
        return (lambda ws: S(ws, noise_mode="const", compute_dtype=torch.bfloat16).float()), \
            "exact ops, compute_dtype=bf16"
    if name == "native_fp16":
        return (lambda ws: S(ws, noise_mode="const").float()), "exact ops, checkpoint's fp16 layers"
    kw = {
        "fast": dict(precision="fp32", channels_last=False),
        "channels_last": dict(precision="fp32", channels_last=True),
        "fused": dict(precision="fp32", channels_last=True, fused_modconv=True),
        "activations": dict(precision="fp32", channels_last=True, fused_modconv=False),
        "bf16": dict(precision="bf16", channels_last=True),
        "fp16": dict(precision="fp16", channels_last=True),
        "compile": dict(precision="fp32", channels_last=True, compile=True),
        "auto": dict(),
    }.get(name)
    if kw is None:
        raise SystemExit(f"unknown variant {name!r}")
    fs = FastSynthesis(G, device=device, **kw)
    return (lambda ws: fs(ws)), fs.describe()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_batch(G, device, variants, batch, args):
    torch.manual_seed(args.seed + batch)
    ws = G.mapping(torch.randn([batch, G.z_dim], device=device), G.make_c(batch), truncation_psi=0.7) \
        if G.c_dim == 0 else G.mapping(torch.randn([batch, G.z_dim], device=device), G.make_c(batch, 0))
    fns, rows = {}, {}
    with torch.inference_mode():
        ref = None
        for name in variants:
            fn, desc = make_variant(name, G, device)
            t0 = time.perf_counter()
            out = fn(ws)
            sync(device)
            first = time.perf_counter() - t0
            compile_s = None
            if name == "compile":                          # FastSynthesis compiles on its 2nd call
                t0 = time.perf_counter()
                out = fn(ws)
                sync(device)
                compile_s = round(time.perf_counter() - t0, 1)
            for _ in range(args.warmup):
                out = fn(ws)
            sync(device)
            if name == "reference":
                ref = out.float()
            fns[name] = fn
            rows[name] = dict(variant=name, description=desc, first_call_s=round(first, 2),
                              compile_s=compile_s, times=[], cpu_times=[])
            if ref is not None:
                d = (out.float() - ref).abs()
                rows[name]["rel_max_diff"] = float(d.max() / ref.abs().max())
                rows[name]["rel_mean_diff"] = float(d.mean() / ref.abs().mean())
        for _ in range(args.rounds):                       # interleaved: load hits all variants alike
            for name, fn in fns.items():
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(args.iters):
                    fn(ws)
                sync(device)
                rows[name]["times"].append((time.perf_counter() - t0) / args.iters)
                rows[name]["cpu_times"].append((time.process_time() - c0) / args.iters)
    ref_times, ref_cpu = rows["reference"]["times"], rows["reference"]["cpu_times"]
    base, base_med, base_cpu = min(ref_times), statistics.median(ref_times), statistics.median(ref_cpu)
    for row in rows.values():
        best, med, cpu = min(row["times"]), statistics.median(row["times"]), statistics.median(row["cpu_times"])
        row.update(batch=batch, best_ms=best * 1e3, median_ms=med * 1e3, cpu_ms=cpu * 1e3,
                   ms_per_frame=best * 1e3 / batch, frames_per_s=batch / best,
                   cpu_ms_per_frame=cpu * 1e3 / batch)
        row["speedup_vs_reference"] = base / best
        row["median_speedup_vs_reference"] = base_med / med
        row["cpu_speedup_vs_reference"] = base_cpu / cpu
    for row in rows.values():
        row["times_ms"] = [round(t * 1e3, 2) for t in row.pop("times")]
        row["cpu_times_ms"] = [round(t * 1e3, 2) for t in row.pop("cpu_times")]
    return list(rows.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["stylegan2", "stylegan3"], default="stylegan2")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--channel-base", type=int, default=16384)
    p.add_argument("--channel-max", type=int, default=512)
    p.add_argument("--num-fp16-res", type=int, default=None,
                   help="layers marked fp16 in a random model (default: 4, as NVIDIA trains them)")
    p.add_argument("--radial", action="store_true", help="StyleGAN3-R (radial filters, 1x1 convs)")
    p.add_argument("--model", help="checkpoint to load with stylegan.load (overrides the options above)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--iters", type=int, default=3, help="calls per timed round")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (best and median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
    p.add_argument("--variants", default=None, help="comma-separated, see above (default: all)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.num_fp16_res is None:
        args.num_fp16_res = 4
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA requested but not available")
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",") if args.variants else \
        (CUDA_VARIANTS if device.type == "cuda" else CPU_VARIANTS)
    if "reference" not in variants:
        variants = ["reference"] + variants
    variants = ["reference"] + [v for v in variants if v != "reference"]

    G = build_generator(args, device)
    machine = dict(cpu=cpu_model(), threads=torch.get_num_threads(), torch=torch.__version__,
                   omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                   python=platform.python_version(), device=str(device),
                   cpu_bf16=cpu_bf16_support() if device.type == "cpu" else None,
                   gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                   loadavg=os.getloadavg())
    model = dict(kind=G.kind, resolution=G.img_resolution, num_ws=G.num_ws, model=args.model,
                 channel_base=None if args.model else args.channel_base,
                 channel_max=None if args.model else args.channel_max,
                 params_M=round(sum(t.numel() for t in G.synthesis.parameters()) / 1e6, 2))
    print(f"# {model}\n# {machine}\n# command: {' '.join(sys.argv)}")
    results = []
    for batch in args.batch:
        rows = run_batch(G, device, variants, batch, args)
        results.extend(rows)
        print(f"\nbatch {batch}")
        print(f"{'variant':14s} {'ms/frame':>9s} {'frames/s':>9s} {'speedup':>8s} {'(median)':>8s} "
              f"{'cpu ms/fr':>9s} {'cpu x':>6s} {'rel max diff':>12s} {'rel mean diff':>13s}  first call")
        for r in rows:
            extra = f"  (compile {r['compile_s']}s)" if r["compile_s"] is not None else ""
            print(f"{r['variant']:14s} {r['ms_per_frame']:9.1f} {r['frames_per_s']:9.2f} "
                  f"{r['speedup_vs_reference']:7.2f}x {r['median_speedup_vs_reference']:7.2f}x "
                  f"{r['cpu_ms_per_frame']:9.1f} {r['cpu_speedup_vs_reference']:5.2f}x "
                  f"{r.get('rel_max_diff', float('nan')):12.2e} {r.get('rel_mean_diff', float('nan')):13.2e}"
                  f"  {r['first_call_s']:.1f}s{extra}   {r['description']}")
    machine["loadavg_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(command=" ".join(sys.argv), machine=machine, model=model, args=vars(args),
                           results=results), fh, indent=1)
    return results


if __name__ == "__main__":
    main()
