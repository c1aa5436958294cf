"""Bad input anywhere: one line on stderr, exit status 2, no traceback, no W&B run left over;
and wandb.config as the final authority."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import PYTHON, offline_env
from PIL import Image
from trainer_helpers import TINY_2D, assert_one_line_error, offline_runs, run_trainer

from contract import runs
from contract.errors import ConfigError, UserError
from trainer.cli import resolve


def empty_folder(tmp_path: Path) -> str:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    return str(tmp_path / "empty")


BAD_ARGS = [
    (["--kl_wieght=1e-6"], ["kl_wieght", "did you mean kl_weight?"]),
    (["--batch_size=abc"], ["batch_size='abc'", "must be an integer"]),
    (["--augment=maybe"], ["augment='maybe'", "true or false"]),
    (["--channels=[16, 24]"], ["channels=[16, 24]", "norm_num_groups=16"]),
    (["--attention_levels=[True]"], ["attention_levels=[True]", "one entry per level"]),
    (["--image_size=30"], ["image_size=30", "divisible"]),
    (["--data_source=folder"], ["data_dir=None", "is required"]),
    (["--data_source=folder", "--data_dir=nowhere"], ["data_dir='nowhere'", "folder not found"]),
    (["--config=missing.yaml"], ["missing.yaml", "config file not found"]),
    (["lr=1"], ["unexpected argument"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_ARGS, ids=[a[0][0] for a in BAD_ARGS])
def test_bad_arguments_fail_before_torch_and_wandb(tmp_path: Path, args, words) -> None:
    proc = run_trainer(tmp_path, *args)
    assert_one_line_error(proc, *words)
    assert not (tmp_path / "wandb").exists()


def test_empty_data_folder(tmp_path: Path) -> None:
    folder = empty_folder(tmp_path)
    proc = run_trainer(tmp_path, "--data_source=folder", f"--data_dir={folder}")
    assert_one_line_error(proc, "no images", folder)
    assert not (tmp_path / "wandb").exists()


def test_bad_sweep_value_fails_before_wandb(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("channels:\n  value: [16, 24]\n")
    proc = run_trainer(tmp_path, WANDB_SWEEP_PARAM_PATH=str(params))
    assert_one_line_error(proc, "channels=[16, 24]", "multiple of norm_num_groups")
    assert not (tmp_path / "wandb").exists()


def test_validation_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from trainer.cli import resolve\n"
        "resolve(['--channels=[32, 64]', '--image_size=32'])\n"
        "assert 'torch' not in sys.modules and 'wandb' not in sys.modules, 'heavy import'\n"
    )
    proc = subprocess.run(
        [PYTHON, "-c", code], env=offline_env(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_unreadable_image_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.png", "b.png", "d.png"):
        Image.new("L", (20, 16), color=128).save(data / name)
    (data / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    proc = run_trainer(tmp_path, *TINY_2D, "--data_source=folder", f"--data_dir={data}")
    assert_one_line_error(proc, str(data / "c.png"), "cannot read image")
    assert not (tmp_path / "wandb").exists()


@pytest.fixture
def in_process_run():
    """train.run inside pytest: put back its signal handlers and wandb's process-wide settings
    (wandb reads WANDB_SWEEP_PARAM_PATH once per process, at its first setup)."""
    import wandb

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    wandb.teardown()
    yield
    wandb.teardown()
    for s, handler in saved.items():
        signal.signal(s, handler)


def tiny_cfg(tmp_path: Path, *extra: str):
    return resolve([*TINY_2D, "--max_epochs=1", f"--output_dir={tmp_path / 'out'}", *extra], {})


def train_locked(cfg, run_id: str) -> int:
    """train.run as trainer.cli calls it: in the run folder it has locked."""
    from trainer import train

    with runs.take_lock(runs.run_dir(cfg.output_dir, run_id)) as lock:
        return train.run(cfg, lock)


@pytest.mark.slow
def test_run_config_is_the_final_authority(
    tmp_path: Path, wandb_offline: Path, monkeypatch: pytest.MonkeyPatch, in_process_run
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("lr:\n  value: 0.001\nkl_weight:\n  value: 0.0\n")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    monkeypatch.setenv("WANDB_RUN_ID", "authority1")
    # The trainer is handed a config without the sweep's values; wandb.init merges them in.
    assert train_locked(tiny_cfg(tmp_path), "authority1") == 0
    saved = torch.load(tmp_path / "out" / "runs" / "authority1" / runs.LATEST, weights_only=True)[
        "config"
    ]
    assert saved["lr"] == 0.001 and saved["kl_weight"] == 0.0


@pytest.mark.slow
def test_bad_value_in_run_config_finishes_the_run_with_exit_2(
    tmp_path: Path, wandb_offline: Path, monkeypatch: pytest.MonkeyPatch, in_process_run
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("channels:\n  value: [8, 10]\n")  # 10: not a multiple of 4 groups
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    monkeypatch.setenv("WANDB_RUN_ID", "badvalue1")  # the trainer sets it; put it back after
    with pytest.raises(ConfigError) as err:
        train_locked(tiny_cfg(tmp_path), "badvalue1")
    assert err.value.key == "channels"
    (run,) = offline_runs(wandb_offline)
    assert run.exit_code == 2  # finished, not left dangling


def test_fp16_on_cpu_is_a_user_error(tmp_path: Path) -> None:
    from trainer import train

    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        pytest.fail("this test documents the CPU rule; run it on a CPU machine")
    with pytest.raises(UserError, match="precision='fp16' needs a CUDA GPU"):
        train.resolve_device(tiny_cfg(tmp_path, "--precision=fp16"))


def test_online_without_login_is_one_line(tmp_path: Path) -> None:
    """No API key: W&B refuses before any network call; the user gets what to do."""
    proc = run_trainer(
        tmp_path, *TINY_2D, WANDB_MODE="online", WANDB_API_KEY="", HOME=str(tmp_path)
    )
    assert_one_line_error(proc, "W&B", "wandb login", "WANDB_MODE=offline")
