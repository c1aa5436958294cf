"""Sweep files: the shipped ones are valid, each broken one says what is wrong in one line,
and the W&B -> Optuna mapping survives a real storage round trip."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO
from sweep_helpers import sweeper, trivial_sweep

from sweeper.space import build_space, local_problems
from sweeper.validate import MAX_COMBINATIONS, validate_file, validate_sweep

CORPUS = sorted((REPO / "tests" / "data" / "sweeps").glob("*.yaml"))
SHIPPED = sorted((REPO / "sweeps").glob("*.yaml"))


def expected(path: Path) -> tuple[str, bool]:
    """The first line of each corpus file: ``# expect: [LOCAL ]message``."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    message = first.removeprefix("# expect: ")
    return message.removeprefix("LOCAL "), message.startswith("LOCAL ")


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_each_invalid_file_names_its_problem(path):
    message, local_only = expected(path)
    problems = validate_file(path)
    if local_only:
        # Valid for W&B; only the local engine cannot run it faithfully.
        assert problems == []
        problems = local_problems(yaml.safe_load(path.read_text()), str(path))
    assert problems, f"{path.name}: no problem found"
    assert all(p.startswith(f"{path}: ") and "\n" not in p for p in problems)
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweeps_are_valid_for_wandb_and_the_local_engine(path):
    cfg = yaml.safe_load(path.read_text())
    assert validate_file(path) == []
    assert local_problems(cfg, str(path)) == []
    for key in ("name", "description", "metric", "run_cap", "early_terminate"):
        assert key in cfg, f"{path.name} lacks {key}"
    assert cfg["metric"] == {"name": "val/best_recon_loss", "goal": "minimize"}
    assert cfg["early_terminate"]["strict"] is True


def test_validate_cli_exit_status_and_lines(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "sweeper", "validate", *map(str, SHIPPED)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    bad = REPO / "tests" / "data" / "sweeps" / "unknown_parameter.yaml"
    local = REPO / "tests" / "data" / "sweeps" / "local_normal.yaml"
    run = subprocess.run(
        [sys.executable, "-m", "sweeper", "validate", str(bad), str(local)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines[0] == f"{bad}: parameters.kl_wieght: unknown config key (did you mean kl_weight?)"
    assert lines[1].startswith(f"warning (local engine only): {local}: parameters.kl_weight:")
    strict = subprocess.run(
        [sys.executable, "-m", "sweeper", "validate", "--local", str(local)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert strict.returncode == 2 and strict.stderr.startswith(f"{local}: parameters.kl_weight")


def test_large_spaces_are_capped_but_still_catch_a_bad_value():
    keys = ("batch_size", "latent_channels", "n_train", "n_val", "log_every")
    parameters = {k: {"values": list(range(1, 11))} for k in keys}
    parameters["image_size"] = {"values": [64, 32, 30]}
    parameters["channels"] = {"value": [16, 32, 32]}
    cfg = {
        "method": "random",
        "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
        "command": ["${env}", "${interpreter}", "-m", "trainer", "${args}"],
        "parameters": parameters,
    }
    assert 3 * 10 ** len(keys) > MAX_COMBINATIONS
    started = time.perf_counter()
    problems = validate_sweep(cfg, "big.yaml")
    assert time.perf_counter() - started < 10
    assert len(problems) == 1 and "image_size=30" in problems[0], problems


def test_list_choices_survive_a_storage_round_trip(tmp_path):
    space, problems = build_space(
        {
            "channels": {"values": [[16, 32], [32, 64]]},
            "lr": {"distribution": "log_uniform_values", "min": 1.0e-5, "max": 1.0e-3},
            "num_res_blocks": {"min": 1, "max": 3},
            "kl_weight": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
            "image_size": {"value": 32},
        },
        "x.yaml",
    )
    assert problems == []
    url = f"sqlite:///{tmp_path / 'x.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    for _ in range(4):
        trial = study.ask(fixed_distributions=space.distributions)
        study.tell(trial, 1.0)
    reloaded = optuna.load_study(study_name="s", storage=url)
    for trial in reloaded.get_trials():
        values = space.values(trial.params)
        assert values["channels"] in ([16, 32], [32, 64])
        assert 1e-5 <= values["lr"] <= 1e-3 and values["num_res_blocks"] in (1, 2, 3)
        assert values["kl_weight"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert values["image_size"] == 32
    # Importance works on the stored study (lists would break it).
    importances = optuna.importance.get_param_importances(reloaded)
    assert set(importances) <= {"channels", "lr", "num_res_blocks", "kl_weight"}


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    bad_file = sweeper(tmp_path, "create", str(REPO / "tests/data/sweeps/local_normal.yaml"))
    assert bad_file.returncode == 2
    assert len(bad_file.stderr.strip().splitlines()) == 1
    assert "distribution normal has no faithful Optuna equivalent" in bad_file.stderr
    unknown = sweeper(tmp_path, "status", "nosuchid")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"sweeper: error: no local sweep 'nosuchid' in sqlite:///{tmp_path / 'sweeps.db'}"
    ]
    for url in ("nosuchdb://x", "sqlite:///:memory:", "postgresql://u@127.0.0.1:1/db"):
        bad_storage = sweeper(
            tmp_path, "create", str(trivial_sweep(tmp_path, run_cap=1)), "--storage", url
        )
        assert bad_storage.returncode == 2, (url, bad_storage.stderr)
        assert len(bad_storage.stderr.strip().splitlines()) == 1, bad_storage.stderr
        assert bad_storage.stderr.startswith(f"sweeper: error: storage {url!r}")


def test_create_reopens_by_name_only_with_the_same_file(tmp_path):
    file = trivial_sweep(tmp_path, run_cap=2)
    first = sweeper(tmp_path, "create", str(file), "--name", "mine")
    again = sweeper(tmp_path, "create", str(file), "--name", "mine")
    other = sweeper(tmp_path, "create", str(file))
    assert first.returncode == again.returncode == other.returncode == 0
    assert first.stdout == again.stdout and other.stdout != first.stdout
    file.write_text(file.read_text().replace("run_cap: 2", "run_cap: 3"))
    changed = sweeper(tmp_path, "create", str(file), "--name", "mine")
    assert changed.returncode == 2 and "different file" in changed.stderr
