"""Backends: frames from a steering state (StyleGAN first)."""
