"""Sweep files: validation, the embedded local engine (Optuna) and agents."""
