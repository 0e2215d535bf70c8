"""Audio in: file decoding, live input devices, the synthesized demo music."""
