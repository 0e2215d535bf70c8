"""Write files so that a reader never sees a half-written one."""
from __future__ import annotations

import os
import tempfile
from typing import Callable


def write_atomically(path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call `write(tmp)` on a temporary file next to `path`, then rename it into place; on any failure
    (including Ctrl-C) the temporary file is removed and `path` is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sgvis-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
