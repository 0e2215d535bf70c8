"""The `sgvis` command line: a table of commands, each in its own module, imported only when it is run (so
`sgvis --help` and argument errors answer at once, without loading torch)."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading

from sgvis.errors import Interrupted, UserError, interrupt_exit_code, write_failure

EXIT_USER_ERROR = 2
# command -> (module with register_cli(subparsers) and the command's function, one-line help)
COMMANDS = {
    "render": ("sgvis.render", "render an audio file to a music-driven video (mp4 with the sound)"),
    "live": ("sgvis.live", "live audio steers the generator in a real-time window"),
    "devices": ("sgvis.live", "list audio input devices"),
    "demo": ("sgvis.demo", "synthesize a demo track and render it with the default model"),
    "info": ("sgvis.model_files", "describe a model, steering or audio-CLIP file (any format sgvis reads)"),
    "convert": ("sgvis.model_files", "convert a checkpoint to sgvis's safetensors format (fast, safe to load)"),
    "eval": ("sgvis.eval.av_align", "evaluate a rendered video, or compare steerings on test audio"),
    "midi-learn": ("sgvis.control.midi", "write a MIDI map (CC/note -> control) by moving each knob in turn"),
    "doctor": ("sgvis.doctor", "report GPU, CUDA toolkit and compiled CUDA ops, and what to fix"),
    "dataset": ("sgvis.data.dataset", "build an image dataset (folder or zip) for train-gan / train-glo"),
    "train-gan": ("sgvis.train.commands", "train a StyleGAN2 generator from scratch"),
    "export-gan": ("sgvis.train.commands", "write the G_ema of a train-gan training state as a model file"),
    "train-glo": ("sgvis.train.commands", "train a small generator fast with latent optimisation (GLO)"),
    "train-encoder": ("sgvis.train.commands", "train learned steering (sound inversion encoder + recurrent blocks)"),
    "train-audio-clip": ("sgvis.train.commands", "train an audio encoder into CLIP's embedding space"),
    "train-mapper": ("sgvis.diffusion.train_mapper", "train a TempoTokens mapper (audio -> pseudo-words) for a text-to-video model"),
}


def version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version as package_version
        return package_version("sgvis")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _chosen_command(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command` (and the other commands of its module) complete; every other command is listed
    by name and help only.  Without `command`, every module is imported (for docs and tests)."""
    parser = Parser(prog="sgvis", description="Sound-driven generative visuals: live from a "
                                     "microphone, or rendered from a track.")
    parser.add_argument("--version", action="version", version=f"sgvis {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command][0]] if command else list(dict.fromkeys(m for m, _ in COMMANDS.values()))
    for module in modules:
        importlib.import_module(module).register_cli(sub)
    for name, (_, help_text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


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


def build_parser_listing() -> argparse.ArgumentParser:
    """The top-level parser for `sgvis`, `sgvis --help`, `sgvis --version` and unknown commands: no module
    imported."""
    parser = Parser(prog="sgvis", description="Sound-driven generative visuals: live from a "
                                     "microphone, or rendered from a track.")
    parser.add_argument("--version", action="version", version=f"sgvis {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _chosen_command(argv)
    parser = build_parser(command) if command else build_parser_listing()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:              # --help, or a command-line mistake (already printed as one line)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USER_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    if command == "live" and getattr(args, "backend", "stylegan") == "stylegan":
        # OpenMP reads its environment when torch loads, so before anything does (the StyleGAN show's threads
        # follow the free cores; sgvis.live.prepare_openmp)
        from sgvis.live import prepare_openmp
        prepare_openmp()
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
