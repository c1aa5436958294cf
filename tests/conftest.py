"""Shared fixtures: every test logs with the real wandb library, offline, into tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from trainer.cache import ENV as CACHE_ENV

REPO = Path(__file__).resolve().parents[1]


def offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess that trains or logs: offline W&B under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(tmp_path / ".config"),
        WANDB_CACHE_DIR=str(tmp_path / ".cache"),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        # Keep several test processes from fighting over the 2 cores.
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own data cache, never the user's; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B for in-process use; returns the folder that receives ``wandb/``."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in offline_env(tmp_path).items():
        if key.startswith("WANDB_"):
            monkeypatch.setenv(key, value)
    return tmp_path


PYTHON = sys.executable
