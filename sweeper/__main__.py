from sweeper.cli import main
from trainer.errors import run_cli

run_cli(main, "sweeper")
