"""What the trainer, the local sweep engine and the analysis agree on, torch-free.

``config`` (every hyperparameter), ``metrics`` (every logged name), ``errors`` (exit statuses and
the one-line user errors), ``runs`` (the run folder ``<output_dir>/runs/<run id>/``) and
``trends`` (the statistics of a learning curve and the guide's overfitting test).
"""
