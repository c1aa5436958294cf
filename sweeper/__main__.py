from contract.errors import run_cli
from sweeper.cli import main

run_cli(main, "sweeper")
