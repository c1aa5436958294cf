"""A preemption warning that reaches ``python -m sweeper`` before an agent's own handler is
installed (while it imports, opens its storage, replays a journal) is kept for the agent, not
lost: run_agent.sh starts agents with SIGUSR1 ignored so that a scheduler signalling every
process of the job cannot kill them, and an ignored signal is gone. ``keep`` runs first thing;
``Agent.run`` reads ``preempted`` once its handler is in place."""

from __future__ import annotations

import signal

preempted = False


def _keep(signum: int, frame: object) -> None:
    global preempted
    preempted = True


def keep() -> None:
    signal.signal(signal.SIGUSR1, _keep)
