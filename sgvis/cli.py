"""The `sgvis` command line: a table of commands, each in its own module, imported only when it is run (so
`sgvis --help` and argument errors answer at once, without loading torch)."""
from __future__ import annotations

import argparse
import importlib
import sys

from sgvis.errors import UserError

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
    "train-gan": ("sgvis.train.gan", "train a StyleGAN2 generator from scratch"),
    "export-gan": ("sgvis.train.gan", "write the G_ema of a train-gan training state as a model file"),
    "train-glo": ("sgvis.train.glo", "train a small generator fast with latent optimisation (GLO)"),
    "train-encoder": ("sgvis.train.encoder", "train learned steering (sound inversion encoder + recurrent blocks)"),
    "train-audio-clip": ("sgvis.train.audio_clip", "train an audio encoder into CLIP's embedding space"),
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
    parser = argparse.ArgumentParser(prog="sgvis", description="Sound-driven generative visuals: live from a "
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _chosen_command(argv)
    parser = build_parser(command) if command else build_parser_listing()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
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


def build_parser_listing() -> argparse.ArgumentParser:
    """The top-level parser for `sgvis`, `sgvis --help`, `sgvis --version` and unknown commands: no module
    imported."""
    parser = argparse.ArgumentParser(prog="sgvis", description="Sound-driven generative visuals: live from a "
                                     "microphone, or rendered from a track.")
    parser.add_argument("--version", action="version", version=f"sgvis {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


if __name__ == "__main__":
    sys.exit(main())
