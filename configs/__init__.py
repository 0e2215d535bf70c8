"""sgvis settings: default.yaml, the presets beside it and the training recipes in train/ (installed as
sgvis.configs, read by sgvis.config)."""
