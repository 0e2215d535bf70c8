"""Features: causal audio analysis (mel, onsets, band levels, chroma, beats), one Features per frame."""
