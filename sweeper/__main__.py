from sweeper import startup

startup.keep()  # before the imports: a preemption warning from now on is kept for the agent

from contract.errors import run_cli  # noqa: E402
from sweeper.cli import main  # noqa: E402

run_cli(main, "sweeper")
