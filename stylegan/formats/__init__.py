"""Readers (and the one writer) for the checkpoint formats sgvis understands."""
