"""Training wing: GAN/GLO trainers, the steering encoder, audio-CLIP; uses the core, never the other way."""
