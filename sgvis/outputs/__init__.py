"""Outputs: where frames go (mp4, PNG folder, the live window or an offscreen surface)."""
