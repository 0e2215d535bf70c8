"""Data wing: datasets of images and audio clips, the procedural image source."""
