"""``python -m trainer [--config FILE.yaml] [--key=value ...]``: parse, validate, train.

The whole config is checked before torch is imported, so a typo costs milliseconds. Layers,
lowest first: defaults, ``--config`` file, ``--key=value`` arguments, then the sweep's values
(``WANDB_SWEEP_PARAM_PATH``, the file ``wandb agent`` hands to ``wandb.init``), read here too
so that a bad sweep value fails before W&B starts; ``run.config`` stays the final authority.
"""

from __future__ import annotations

import os
import sys

from contract import runs
from contract.config import FILE_SOURCES, Config, build, help_text, load_yaml, parse_cli
from contract.errors import EXIT_CRASHED, EXIT_INTERRUPTED, USER_ERROR_EXIT, UserError
from trainer import files

USAGE = """usage: python -m trainer [--config FILE.yaml] [--key=value ...]

Train MONAI's AutoencoderKL once and log it to Weights & Biases (offline with WANDB_MODE=offline).
Values are Python literals, as `wandb agent` writes them: --channels=[32, 64] --augment=True.
Precedence: defaults < --config file < --key=value < the sweep's values in wandb.config.
Exit status: 0 finished or stopped (SIGTERM), 2 bad input (or the run id is being trained by
another process), 3 diverged, 75 preempted (SIGUSR1), 130 Ctrl-C. The run folder
<output_dir>/runs/<run id>/ holds run.lock, the checkpoints, progress.jsonl and exit.json.
"""


def split_config_file(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--config FILE`` / ``--config=FILE`` out of argv."""
    path, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise UserError("--config needs a file: --config FILE.yaml")
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    return path, rest


def resolve(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    """The validated Config for these arguments (and a sweep's parameter file, if any)."""
    environ = os.environ if environ is None else environ
    path, rest = split_config_file(argv)
    layers = []
    if path:
        layers.append(load_yaml(path))
    layers.append(parse_cli(rest))
    sweep_params = environ.get("WANDB_SWEEP_PARAM_PATH")
    if sweep_params:
        layers.append(load_yaml(sweep_params))
    return build(*layers)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(USAGE + help_text())
        return 0
    cfg = resolve(argv)
    if cfg.data_source in FILE_SOURCES:
        files.split(cfg)  # a missing folder or a bad datalist fails here, before torch loads
    run_id = os.environ.get("WANDB_RUN_ID") or runs.new_run_id()
    runs.check_run_id(run_id)  # the id names a folder: refused before anything is created
    # The lock, before torch loads and before anything is written: a second process on a run
    # id that is being trained stops here in milliseconds, having changed nothing.
    with runs.take_lock(runs.run_dir(cfg.output_dir, run_id)) as lock:
        try:
            from trainer import train  # torch, MONAI and wandb load only for a valid config

            return train.run(cfg, lock)
        except UserError as exc:
            runs.write_exit(lock, runs.STATUS_ERROR, USER_ERROR_EXIT, str(exc))
            raise
        except KeyboardInterrupt:
            runs.write_exit(lock, runs.STATUS_INTERRUPTED, EXIT_INTERRUPTED, "SIGINT")
            raise
        except Exception as exc:
            runs.write_exit(lock, runs.STATUS_CRASHED, EXIT_CRASHED, f"{type(exc).__name__}: {exc}")
            raise
