class CheckpointError(Exception):
    """A checkpoint could not be loaded; the message is one line naming the file and the problem."""
