import errno
import signal


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2, no traceback."""


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) turned into KeyboardInterrupt, so that every path that cleans up
    after Ctrl-C (sinks removing their part files, trainers saving their state) runs for it too.  `signum` gives
    the exit status: 128 + signum, as a shell reports a process the signal ended (SIGTERM 143, SIGHUP 129)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def interrupt_exit_code(e: BaseException) -> int:
    """128 + the signal's number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(getattr(e, "signum", signal.SIGINT))


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when empty), for one-line user errors."""
    s = str(e).strip()
    line = s.splitlines()[0] if s else type(e).__name__
    return line if limit is None else line[:limit]


def reason(e: BaseException, limit: int | None = 120) -> str:
    """What went wrong, for a user: an OS or FFmpeg (PyAV) error's own text without its number ("[Errno
    1094995529] ..." from PyAV, "[Errno 28] ..." from the OS) and without the file name the message repeats;
    otherwise the message's first line."""
    text = getattr(e, "strerror", None)
    if not isinstance(text, str) or not text.strip():
        text = first_line(e)
    text = text.strip()
    return text if limit is None else text[:limit]


# OS errors a run can meet writing its outputs that are the machine's state, not a bug: one line, exit 2.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def write_failure(target: str, e: BaseException) -> UserError:
    """One line for a failed write of `target`: what the system said, and what to do about it when we know."""
    why = reason(e)
    hint = ""
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e):
        why, hint = "no space left on the disk", "; free some space or write it to another disk"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "; write it somewhere you can write to"
    return UserError(f"cannot write {target}: {why}{hint}")
