"""What the sgvis trainers (train-gan, train-audio-clip, train-encoder) share about their resumable state."""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading

import torch

from sgvis.errors import Interrupted, UserError, first_line


def load_training_state(path: str, tag: str, version, command: str) -> dict:
    """Read a training state written with torch.save (tensors and plain containers only: weights_only) and
    check its format tag and version; every problem is one UserError line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--resume: {path} does not exist (no earlier run there)") from None
    except IsADirectoryError:
        raise UserError(f"--resume: {path} is a folder, not a training state") from None
    except Exception as e:  # noqa: BLE001 - truncated or foreign files
        raise UserError(f"--resume: {path} is not readable ({first_line(e, 120)})") from None
    if not isinstance(state, dict) or state.get("format") != tag:
        raise UserError(f"--resume: {path} is not an sgvis {command} state")
    if state.get("version") != version:
        raise UserError(f"--resume: {path} has state version {state.get('version')}; this sgvis reads {version}")
    return state


def resumable_state(outdir: str, resume: bool, overwrite: bool, tag: str, version, command: str) -> dict | None:
    """The state a run continues from (`--resume`: OUTDIR/training-state.pt, checked), or None for a new run; a
    new run in a non-empty --out without --overwrite is one UserError line, so that nothing there is touched."""
    if not resume and os.path.isdir(outdir) and os.listdir(outdir) and not overwrite:
        raise UserError(f"--out {outdir} is not empty; pass --resume to continue that run or --overwrite to "
                        f"start again there")
    if not resume:
        return None
    return load_training_state(os.path.join(outdir, "training-state.pt"), tag, version, command)


def check_outdir(outdir: str, flag: str = "--outdir") -> None:
    """Create a run folder (if needed) and make sure files can be written in it; `flag` is the option the user
    gave it with (train-gan/train-glo: --outdir, train-encoder: --out), named in the one-line error."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise UserError(f"{flag} {outdir} is a file, not a folder; give a folder for the run")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {flag} {outdir}: {e.strerror}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sgvis-write-test-", dir=outdir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"cannot write to {flag} {outdir}: {e.strerror}") from None


def atomic_torch_save(obj, path: str) -> None:
    """torch.save to a temporary file renamed into place: an interruption never leaves a half-written state."""
    from stylegan.atomic import write_atomically
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def raise_keyboard_interrupt(signum, frame):
    """SIGTERM handler: end training the way Ctrl-C does, so the last checkpoint is written."""
    raise Interrupted(signum)


@contextlib.contextmanager
def training_process(device: torch.device, threads: int | None):
    """What a trainer sets for its run and restores after: denormals flushed on CPU (weights and gradients that
    underflow towards 0 make CPU kernels up to 10x slower), torch's thread count, and SIGTERM (kill, timeout, a
    scheduler ending the job) raising KeyboardInterrupt so that the state is saved as on Ctrl-C."""
    flushed = device.type == "cpu" and torch.set_flush_denormal(True)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if flushed:
            torch.set_flush_denormal(False)
        torch.set_num_threads(before)
