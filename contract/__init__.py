"""What the trainer, the local sweep engine and the analysis agree on, torch-free.

``config`` (every hyperparameter), ``metrics`` (every logged name), ``errors`` (exit statuses and
the one-line user errors) and ``runs`` (the run folder ``<output_dir>/runs/<run id>/``).
"""
