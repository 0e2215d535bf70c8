"""Diffusion: audio-conditioned text-to-video generation (TempoTokens).

    from sgvis.diffusion import load_beats, load_mapper
    beats = load_beats("BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")   # BEATsEncoder
    mapper = load_mapper("learned_embeds.pth")                              # TempoMapper
    tokens = mapper(beats.layer_features(wav16k))    # (temporal, local1..4, class_token)

The `tempotokens` backend (sgvis.diffusion.backend, registered in sgvis.backends.BACKENDS) renders video from
audio with these and a diffusers text-to-video folder; docs/diffusion.md describes both.
"""
from sgvis.diffusion.beats import BEATsEncoder, load_beats
from sgvis.diffusion.mapper import TempoMapper, load_mapper

__all__ = ["BEATsEncoder", "TempoMapper", "load_beats", "load_mapper"]
