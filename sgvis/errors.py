class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2, no traceback."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when empty), for one-line user errors."""
    s = str(e).strip()
    line = s.splitlines()[0] if s else type(e).__name__
    return line if limit is None else line[:limit]
