"""Write files so that a reader never sees a half-written one."""
from __future__ import annotations

import os
import tempfile
from typing import Callable


# The process's umask, read once (reading it means setting it, which is not thread-safe).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def replace_into_place(tmp: str, path: str, directory: bool = False) -> None:
    """Rename a finished temporary file (or folder) to `path`, with the permissions a newly created one would have:
    mkstemp / mkdtemp make them private to the user (0600 / 0700), which a published video or frame folder
    should not be."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_UMASK)
    os.replace(tmp, path)


def link_into_place(tmp: str, path: str) -> None:
    """Like replace_into_place, but never replaces anything: FileExistsError if something is at `path` (decided
    by the file system in one step, so a file created meanwhile is never clobbered)."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.link(tmp, path)
    os.unlink(tmp)


def write_atomically(path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into place; on any failure
    (including Ctrl-C) the temporary file is removed and `path` is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sgvis-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        replace_into_place(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomically(path, data, indent: int = 2) -> None:
    """`data` as JSON at `path`, written through a temporary file (never a half-written file)."""
    import json

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=indent)
    write_atomically(path, write, suffix=".json.tmp")
