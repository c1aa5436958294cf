"""VAE training entrypoint for W&B sweeps (``python -m trainer``).

Importing the package is cheap: torch and MONAI load only when training starts.
"""
