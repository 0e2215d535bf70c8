"""The `sgvis` command line."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from sgvis.errors import UserError

EXIT_USER_ERROR = 2
# Modules that add their own subcommands with register_cli(subparsers).
COMMAND_MODULES = ["sgvis.render", "sgvis.live", "sgvis.doctor", "sgvis.data.dataset", "sgvis.train.gan", "sgvis.train.glo", "sgvis.eval.av_align", "sgvis.demo", "sgvis.train.encoder", "sgvis.train.audio_clip"]


def _count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def cmd_info(args) -> int:
    import stylegan
    start = time.perf_counter()
    G = stylegan.load(args.model, device="cpu")
    seconds = time.perf_counter() - start
    if G.kind == "stylegan3":
        config = "R" if G.config["synthesis_kwargs"].get("use_radial_filters") else "T"
        arch = f"StyleGAN3-{config}"
    else:
        arch = f"StyleGAN2 ({G.config['synthesis_kwargs'].get('architecture', 'skip')})"
    rows = [
        ("file", args.model),
        ("format", G.source["description"]),
        ("architecture", arch),
        ("resolution", f"{G.img_resolution}x{G.img_resolution}, {G.img_channels} channels"),
        ("z_dim / w_dim", f"{G.z_dim} / {G.w_dim}"),
        ("num_ws", str(G.num_ws)),
        ("c_dim", f"{G.c_dim} ({'conditional' if G.c_dim else 'unconditional'})"),
        ("parameters", f"{_count_parameters(G):,}"),
    ]
    if G.mapping.latent_bank:
        rows.append(("latent bank", f"{G.mapping.latent_bank} learned latents (random z draw from them; "
                                    f"sharpness {G.mapping.latent_bank_sharpness:.1f})"))
    rows += [
        ("load time", f"{seconds * 1000:.0f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_convert(args) -> int:
    import stylegan
    from sgvis.outputs.files import check_output_path
    check_output_path(args.output, args.overwrite)
    G = stylegan.load(args.input, device="cpu")
    stylegan.save(G, args.output, extra={"converted_from": os.path.basename(args.input),
                                         "source_format": G.source["description"]})
    print(f"wrote {args.output} ({G.source['description']} -> sgvis safetensors, "
          f"{os.path.getsize(args.output) / 1e6:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgvis", description="Sound-driven StyleGAN visuals.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="describe a StyleGAN checkpoint (any supported format)")
    p.add_argument("model", help="checkpoint: NVIDIA .pkl (StyleGAN2-ADA/StyleGAN3/TF), rosinality .pt, "
                                 "or sgvis .safetensors")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert a checkpoint to sgvis's safetensors format (fast, safe to load)")
    p.add_argument("input", help="checkpoint in any supported format")
    p.add_argument("output", help="output .safetensors path")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=cmd_convert)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    from stylegan.errors import CheckpointError
    try:
        return int(args.func(args) or 0)
    except (UserError, CheckpointError) as e:
        print(f"sgvis: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("sgvis: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
