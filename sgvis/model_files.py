"""`sgvis info` and `sgvis convert`: what a file sgvis reads or writes is, and checkpoints to sgvis's format."""
from __future__ import annotations

import json
import os
import time

from sgvis.errors import UserError


def _safetensors_format(path: str) -> str | None:
    """The sgvis format tag in a .safetensors file's metadata (None: not safetensors, or no tag).  Reads only
    the header: a little-endian u64 length, then that much JSON."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return None
            n = int.from_bytes(head, "little")
            if not 2 <= n <= min(100 << 20, os.path.getsize(path) - 8):
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta.get("format") if isinstance(meta, dict) else None


def _rows_steering(path: str) -> list[tuple[str, str]]:
    from sgvis.steer.learned import SteeringFileError, load_steering
    try:
        model = load_steering(path)
    except SteeringFileError as e:
        raise UserError(str(e)) from None
    cfg = model.config()
    params = sum(p.numel() for p in model.parameters())
    return [("file", path), ("format", "sgvis learned-steering checkpoint (sound inversion encoder + "
                                       "coarse/mid/fine recurrent blocks)"),
            ("fits models with", f"num_ws {cfg['num_ws']}, w_dim {cfg['w_dim']}"),
            ("groups", ", ".join(f"{g} {v}" for g, v in cfg["groups"].items())),
            ("mel", ", ".join(f"{k} {v}" for k, v in cfg["mel_config"].items())),
            ("parameters", f"{params:,}"),
            ("use with", f"sgvis render AUDIO --steering {path} --model <the model it was trained for>")]


def _rows_audio_clip(path: str) -> list[tuple[str, str]]:
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata() or {})
        params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    rows = [("file", path), ("format", "sgvis audio-CLIP encoder (audio -> CLIP embedding space, from "
                                       "sgvis train-audio-clip)")]
    for key in sorted(meta):
        if key not in ("format",) and len(meta[key]) < 200:
            rows.append((key, meta[key]))
    rows += [("parameters", f"{params:,}"),
             ("use with", f"sgvis train-encoder ... --set train_encoder.audio_clip={path}, or "
                          f"sgvis eval steering --audio-clip {path}")]
    return rows


def _numel(shape) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


def _rows_generator(path: str, label: str) -> list[tuple[str, str]]:
    import stylegan
    start = time.perf_counter()
    G = stylegan.load(path, device="cpu")
    seconds = time.perf_counter() - start
    if G.kind == "stylegan3":
        config = "R" if G.config["synthesis_kwargs"].get("use_radial_filters") else "T"
        arch = f"StyleGAN3-{config}"
    else:
        arch = f"StyleGAN2 ({G.config['synthesis_kwargs'].get('architecture', 'skip')})"
    rows = [
        ("file", label),
        ("format", G.source["description"]),
        ("architecture", arch),
        ("resolution", f"{G.img_resolution}x{G.img_resolution}, {G.img_channels} channels"),
        ("z_dim / w_dim", f"{G.z_dim} / {G.w_dim}"),
        ("num_ws", str(G.num_ws)),
        ("c_dim", f"{G.c_dim} ({'conditional' if G.c_dim else 'unconditional'})"),
        ("parameters", f"{sum(p.numel() for p in G.parameters()):,}"),
    ]
    if G.mapping.latent_bank:
        rows.append(("latent bank", f"{G.mapping.latent_bank} learned latents (random z draw from them; "
                                    f"sharpness {G.mapping.latent_bank_sharpness:.1f})"))
    rows.append(("load time", f"{seconds * 1000:.0f} ms"))
    return rows


def describe(path: str) -> list[tuple[str, str]]:
    """(field, value) rows describing any file sgvis reads or writes; 'default' is the built-in model."""
    from sgvis.backends.stylegan import DEFAULT_MODEL_NAME, resolve_model_path
    label = path
    if path == DEFAULT_MODEL_NAME and not os.path.exists(path):
        path = resolve_model_path(path)
        label = f"default (the built-in model: {path})"
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give a file")
    fmt = _safetensors_format(path) if os.path.isfile(path) else None
    from sgvis.steer.learned import FORMAT_TAG as STEERING_TAG
    from sgvis.train.clip_models import FORMAT_TAG as AUDIO_CLIP_TAG
    if fmt == STEERING_TAG:
        return _rows_steering(path)
    if fmt == AUDIO_CLIP_TAG:
        return _rows_audio_clip(path)
    return _rows_generator(path, label)


def cmd_info(args) -> int:
    rows = describe(args.model)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_convert(args) -> int:
    import stylegan
    from sgvis.backends.stylegan import resolve_model_path
    from sgvis.outputs.files import check_output_path
    source = resolve_model_path(args.input) if args.input == "default" else args.input
    check_output_path(args.output, args.overwrite, inputs=(source,))
    G = stylegan.load(source, device="cpu")
    from safetensors import SafetensorError

    from sgvis.errors import write_failure
    try:
        stylegan.save(G, args.output, extra={"converted_from": os.path.basename(source),
                                             "source_format": G.source["description"]})
    except (OSError, SafetensorError) as e:        # the temporary file is already removed (write_atomically)
        raise write_failure(args.output, e) from None
    print(f"wrote {args.output} ({G.source['description']} -> sgvis safetensors, "
          f"{os.path.getsize(args.output) / 1e6:.1f} MB)")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a model, steering or audio-CLIP file (any format sgvis reads)")
    p.add_argument("model", help="'default' (the built-in model), a StyleGAN checkpoint (NVIDIA .pkl, TF .pkl, "
                                 "rosinality .pt, sgvis .safetensors), or a steering / audio-CLIP file sgvis wrote")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("convert", help="convert a checkpoint to sgvis's safetensors format (fast, safe to load)")
    p.add_argument("input", help="checkpoint in any supported format")
    p.add_argument("output", help="output .safetensors path")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=cmd_convert)
