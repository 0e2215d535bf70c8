"""Evaluation wing: AV-Align and motion metrics, steering comparisons."""
