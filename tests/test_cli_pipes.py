"""Every entry point piped into a reader that has gone (`... | head`) ends quietly, as a Unix
tool does: no traceback, status 141 (128 + SIGPIPE) as a shell reports such a tool."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import PYTHON, REPO, offline_env

from contract.errors import EXIT_CLOSED_PIPE


@pytest.mark.parametrize(
    ("args", "codes"),
    [
        (["trainer", "--help"], {EXIT_CLOSED_PIPE}),
        (["sweeper", "validate", "sweeps/arch.yaml", "sweeps/smoke.yaml"], {EXIT_CLOSED_PIPE}),
        # argparse's own help swallows the failed write itself, then exits 0.
        (["sweeper", "--help"], {0, EXIT_CLOSED_PIPE}),
        (["analysis", "report", "--help"], {0, EXIT_CLOSED_PIPE}),
    ],
    ids=["trainer --help", "sweeper validate", "sweeper --help", "analysis report --help"],
)
def test_an_entry_point_whose_reader_has_gone_ends_quietly(args, codes, tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: every write fails (EPIPE)
    try:
        done = subprocess.run([PYTHON, "-m", *args], stdout=write, stderr=subprocess.PIPE,
                              cwd=REPO, env=offline_env(tmp_path), text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode in codes, done.stderr
