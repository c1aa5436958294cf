from contract.errors import run_cli
from trainer.cli import main

run_cli(main, "trainer")
