"""``python -m analysis report SOURCE [--sweep ID] [--out DIR] [...]``: see analysis/cli.py."""

from analysis.cli import main
from contract.errors import run_cli

run_cli(main, "analysis")
