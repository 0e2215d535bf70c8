"""The `sgvis` command line."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import time

from sgvis.errors import Interrupted, UserError, interrupt_exit_code, write_failure

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
    check_output_path(args.output, args.overwrite, inputs=(args.input,))
    G = stylegan.load(args.input, device="cpu")
    from safetensors import SafetensorError
    try:
        stylegan.save(G, args.output, extra={"converted_from": os.path.basename(args.input),
                                             "source_format": G.source["description"]})
    except (OSError, SafetensorError) as e:        # the temporary file is already removed (write_atomically)
        raise write_failure(args.output, e) from None
    print(f"wrote {args.output} ({G.source['description']} -> sgvis safetensors, "
          f"{os.path.getsize(args.output) / 1e6:.1f} MB)")
    return 0


class Parser(argparse.ArgumentParser):
    """Command-line mistakes are one line too ("sgvis: error: ..."), like every other bad input; subcommand
    parsers are made with the same class."""

    def error(self, message: str):
        command = self.prog.split(" ", 1)[1] if " " in self.prog else None
        hint = f"; see 'sgvis {command} --help'" if command else "; see 'sgvis --help'"
        print(f"sgvis: error: {message}{hint}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


# Signals that end a run the way Ctrl-C does (KeyboardInterrupt), so that its cleanup runs.
TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


_stopping: list[int] = []          # the termination signal being handled, once one came


def _terminate(signum, frame):
    # Only the first one interrupts: a second TERM or HUP while the run cleans up must not cut the cleanup short.
    # (The handler stays installed and does nothing: switching to SIG_IGN while a signal is pending makes Python
    # raise "Signal N ignored due to race condition" in the middle of the cleanup.)
    if _stopping:
        return
    _stopping.append(signum)
    raise Interrupted(signum)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    # A warning reaches the user as one line, without Python's file:line and source line.
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    if text.startswith("sgvis: "):
        text = text[len("sgvis: "):]
    print(f"sgvis: warning: {text}", file=file if file is not None else sys.stderr)


@contextlib.contextmanager
def one_line_warnings():
    import warnings
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


@contextlib.contextmanager
def termination_signals_interrupt():
    """SIGTERM and SIGHUP raise Interrupted (a KeyboardInterrupt) in the main thread while the command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stopping.clear()
    previous = {sig: signal.signal(sig, _terminate) for sig in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sgvis", description="Sound-driven StyleGAN visuals.")
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:              # --help, or a command-line mistake (already printed as one line)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USER_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    from stylegan.errors import CheckpointError
    from sgvis.errors import WRITE_ERRNOS
    try:
        with termination_signals_interrupt(), one_line_warnings():
            return int(args.func(args) or 0)
    except (UserError, CheckpointError) as e:
        print(f"sgvis: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt as e:
        # Exit status 128 + the signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), as a shell reports it.
        name = "interrupted" if interrupt_exit_code(e) == 130 else f"stopped by {e}"
        print(f"sgvis: {name}", file=sys.stderr)
        return interrupt_exit_code(e)
    except OSError as e:
        # The machine's state (a full disk, a read-only place) met while writing: one line, not a traceback.
        if getattr(e, "errno", None) not in WRITE_ERRNOS:
            raise
        print(f"sgvis: error: {write_failure(e.filename or 'an output', e)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
