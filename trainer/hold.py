"""A test hook: hold the trainer at a known point until the test lets it go.

A test that signals a real trainer "during epoch 2", or expects an agent to stop a trial
"while it still runs", must not guess how long an epoch takes: on a loaded machine the
trainer may be done before the signal lands, or not have started. With
``VAE_SWEEPS_TEST_HOLD=epoch:N`` (after epoch N's progress row and checkpoint), ``step:N``
(after optimizer step N) or ``end:N`` (training over at epoch N, before the summary), the
trainer reaching that point writes ``held`` into its run folder and waits, without training,
until a stop or preemption signal arrives (then it acts on it as anywhere else) or a file
``release`` appears there (then it goes on). It removes both files as it leaves, and prints a
line ``test hold: held at KIND N`` that stays in its output: a signal that was already on its
way lets the run through at once, too fast for anyone to see ``held``. Each point is passed
once per process. Unset, nothing changes: the loop compares one integer per step.

The variable is for tests only; agents pass it to their trials like any other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contract.errors import UserError

ENV = "VAE_SWEEPS_TEST_HOLD"
HELD, RELEASE = "held", "release"
POLL_SECONDS = 0.01
KINDS = ("epoch", "step", "end")
MARK = "test hold: held at "


@dataclass(frozen=True)
class Hold:
    kind: str  # one of KINDS
    at: int

    def wait(self, kind: str, at: int, folder: Path, go_on: Callable[[], bool]) -> None:
        """At (kind, at) only: announce, then wait for ``go_on()`` or the release file."""
        if (kind, at) != (self.kind, self.at):
            return
        held, release = folder / HELD, folder / RELEASE
        tmp = held.with_name(HELD + ".tmp")
        tmp.write_text(f"{kind} {at}\n")
        os.replace(tmp, held)  # whole when seen
        print(f"{MARK}{kind} {at}", flush=True)
        while not (go_on() or release.exists()):
            time.sleep(POLL_SECONDS)
        held.unlink(missing_ok=True)
        release.unlink(missing_ok=True)


def from_env() -> Hold | None:
    text = os.environ.get(ENV)
    if not text:
        return None
    kind, _, at = text.partition(":")
    if kind not in KINDS or not at.isdigit():
        raise UserError(f"{ENV}={text!r}: expected epoch:N, step:N or end:N")
    return Hold(kind, int(at))
