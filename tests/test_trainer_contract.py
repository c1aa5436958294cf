"""The metrics contract (SPEC section 2), checked on real offline runs read back by W&B's reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_helpers import (
    TINY_2D,
    TINY_3D,
    offline_runs,
    only_run_dir,
    run_trainer,
    run_trainer_on_terminal,
)

from contract import metrics as m
from contract import runs
from contract.config import FIELDS, build
from trainer.data import load

STEPS_PER_EPOCH = 2  # n_train=8, batch_size=4
EPOCHS = 2


def check_contract(run, epochs: int, steps_per_epoch: int, n_triplets: int) -> None:
    """Every row of the contract: keys, moments, x-axes, counts."""
    steps = [row[m.TRAIN_STEP] for row in run.rows_with(m.TRAIN_RECON)]
    assert steps == list(range(1, epochs * steps_per_epoch + 1))
    assert all(m.TRAIN_STEP in row for row in run.rows_with(m.TRAIN_RECON))

    triplet_steps = [row[m.TRAIN_STEP] for row in run.rows_with(f"{m.TRAIN_TRIPLETS}._type")]
    assert triplet_steps == [1 + e * steps_per_epoch for e in range(epochs)]  # first batch of each

    epoch_rows = run.rows_with(m.EPOCH)
    assert [row[m.EPOCH] for row in epoch_rows] == list(range(1, epochs + 1))
    per_epoch = (m.VAL_RECON, m.TIME_PER_EPOCH, m.VAL_BEST_RECON, m.TRAIN_EVAL_RECON)
    for key in (*per_epoch, m.VAL_SSIM, m.VAL_PSNR, m.VAL_BEST_SSIM):
        assert [row[m.EPOCH] for row in run.rows_with(key)] == list(range(1, epochs + 1)), key
    assert not run.rows_with(m.VAL_MS_SSIM)  # 16 pixels: too small for MS-SSIM's five scales
    for row in epoch_rows:
        assert row[m.TIME_PER_EPOCH] > 0
        assert row[m.VAL_BEST_RECON] <= row[m.VAL_RECON] + 1e-12
        assert -1 <= row[m.VAL_SSIM] <= row[m.VAL_BEST_SSIM] <= 1
        assert 0 < row[m.VAL_PSNR] < 100
        triplets = sorted(k[: -len("._type")] for k in row if k.endswith("._type"))
        assert triplets == [m.val_triplet_key(i) for i in range(n_triplets)]
        assert all(m.VAL_TRIPLET_PATTERN.match(k) for k in triplets)
    best = [row[m.VAL_BEST_RECON] for row in epoch_rows]
    assert best == sorted(best, reverse=True)  # best-so-far never rises
    best_ssim = [row[m.VAL_BEST_SSIM] for row in epoch_rows]
    assert best_ssim == sorted(best_ssim) and best_ssim[-1] == max(
        row[m.VAL_SSIM] for row in epoch_rows
    )
    assert not any(m.TRAIN_RECON in row for row in epoch_rows)  # no x-axis mixing

    x_axes = {d.get("name") or d.get("glob_name"): d.get("step_metric") for d in run.metrics}
    assert x_axes[m.TRAIN_RECON] == m.TRAIN_STEP
    assert x_axes[m.TRAIN_TRIPLETS] == m.TRAIN_STEP
    assert x_axes["val/*"] == m.EPOCH
    assert x_axes[m.TIME_PER_EPOCH] == m.EPOCH
    assert x_axes[m.TRAIN_EVAL_RECON] == m.EPOCH
    # step_metric only: summary= would turn summary values into dicts (wandb 0.31).
    assert not any(d.get("summary") for d in run.metrics)

    assert set(FIELDS) <= set(run.config)
    assert isinstance(run.summary[m.VAL_BEST_RECON], float)
    assert run.summary[m.VAL_BEST_RECON] == min(best)
    assert run.summary[m.VAL_BEST_SSIM] == best_ssim[-1]
    assert run.summary[m.SUMMARY_STATUS] == "finished"
    assert run.summary[m.SUMMARY_DIVERGED] is False
    assert run.summary[m.SUMMARY_EPOCHS] == epochs
    assert run.exit_code == 0
    # The run's own references, once per run in the summary, never as history rows.
    for key in (m.SUMMARY_INIT_VAL_RECON, m.SUMMARY_TRIVIAL_VAL_RECON):
        assert isinstance(run.summary[key], float) and run.summary[key] > 0, key
        assert not run.rows_with(key), key


@pytest.mark.slow
def test_contract_2d_with_sweep_values(tmp_path: Path) -> None:
    # The sweep's values arrive as wandb agent hands them over (its own file writer), and beat
    # the command line.
    from wandb.sdk.lib import config_util

    params = tmp_path / "sweep" / "config-run.yaml"
    config_util.save_config_file_from_dict(
        str(params), {"kl_weight": {"value": 1e-5}, "lr": {"value": 1e-3}}
    )
    proc = run_trainer(
        tmp_path,
        *TINY_2D,
        "--kl_weight=1e-6",
        WANDB_SWEEP_PARAM_PATH=str(params),
        WANDB_SWEEP_ID="sweep123",
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = offline_runs(tmp_path)
    check_contract(run, EPOCHS, STEPS_PER_EPOCH, n_triplets=3)
    assert run.config["kl_weight"] == 1e-5 and run.config["lr"] == 1e-3
    assert run.config["channels"] == [8, 8]
    assert run.sweep_id == "sweep123"

    folder = only_run_dir(tmp_path)
    assert folder.name == run.run_id
    assert {"checkpoint.pt", "best.pt", "progress.jsonl"} <= {p.name for p in folder.iterdir()}
    progress = [json.loads(line) for line in (folder / "progress.jsonl").read_text().splitlines()]
    epoch_rows = run.rows_with(m.EPOCH)
    assert [p[m.EPOCH] for p in progress] == [1, 2]
    assert all(tuple(p) == m.progress_keys(16) for p in progress), "what the local engine reads"
    for key in (m.VAL_RECON, m.VAL_SSIM, m.VAL_PSNR, m.VAL_BEST_SSIM):
        assert [p[key] for p in progress] == [r[key] for r in epoch_rows], key
    train_recon = [r[m.TRAIN_RECON] for r in run.rows_with(m.TRAIN_RECON)]
    for p, e in zip(progress, range(EPOCHS), strict=True):
        mean = sum(train_recon[e * STEPS_PER_EPOCH : (e + 1) * STEPS_PER_EPOCH]) / STEPS_PER_EPOCH
        assert p[m.TRAIN_RECON] == pytest.approx(mean)
        assert p[m.TIME_PER_EPOCH] > 0
    assert "epoch 2/2" in proc.stdout and "wandb sync" in proc.stdout

    # The trivial reference: L1 of the mean training image against every validation image.
    data = load(build(run.config))
    mean = data.train.double().mean(dim=0)
    trivial = (data.val.double() - mean).abs().mean().item()
    assert run.summary[m.SUMMARY_TRIVIAL_VAL_RECON] == pytest.approx(trivial, rel=1e-5)


@pytest.mark.slow
def test_contract_3d_with_triplet_cap_on_a_terminal(tmp_path: Path) -> None:
    code, terminal = run_trainer_on_terminal(
        tmp_path, *TINY_3D, "--max_val_triplets=2", "--log_every=3"
    )
    assert code == 0, terminal
    assert "epoch 1/2: 100%" in terminal  # a tqdm bar per epoch on a terminal
    (run,) = offline_runs(tmp_path)
    check_contract(run, EPOCHS, STEPS_PER_EPOCH, n_triplets=2)
    row = run.rows_with(f"{m.val_triplet_key(0)}._type")[0]
    # original | reconstruction | difference across, the three central slices down.
    assert row[f"{m.val_triplet_key(0)}.height"] == 3 * 16
    assert row[f"{m.val_triplet_key(0)}.width"] == 3 * 16
    assert run.config["spatial_dims"] == 3


@pytest.mark.slow
def test_contract_holds_with_the_adversarial_term(tmp_path: Path) -> None:
    adv = ["--adv_weight=0.01", "--adv_warmup_epochs=1", "--disc_layers=2", "--disc_channels=8"]
    proc = run_trainer(tmp_path, *TINY_2D, *adv)
    assert proc.returncode == 0, proc.stderr
    assert "adversarial term x0.01 from epoch 2" in proc.stdout
    (run,) = offline_runs(tmp_path)
    check_contract(run, EPOCHS, STEPS_PER_EPOCH, n_triplets=3)
    x_axes = {d.get("name") or d.get("glob_name"): d.get("step_metric") for d in run.metrics}
    after_warmup = list(range(STEPS_PER_EPOCH + 1, EPOCHS * STEPS_PER_EPOCH + 1))
    for key in (m.TRAIN_GEN_LOSS, m.TRAIN_DISC_LOSS):
        assert [row[m.TRAIN_STEP] for row in run.rows_with(key)] == after_warmup, key
        assert all(row[key] >= 0 for row in run.rows_with(key))
        assert x_axes[key] == m.TRAIN_STEP
    for row in run.rows_with(m.TRAIN_GEN_LOSS):  # train/loss is the VAE's whole objective
        expected = row[m.TRAIN_RECON] + 1e-6 * row[m.TRAIN_KL] + 0.01 * row[m.TRAIN_GEN_LOSS]
        assert row[m.TRAIN_LOSS] == pytest.approx(expected, rel=1e-5)
    assert not any(m.TRAIN_GEN_LOSS in row for row in run.rows_with(m.EPOCH))


@pytest.mark.slow
def test_train_eval_loss_is_measured_on_fixed_training_images_like_validation(
    tmp_path: Path,
) -> None:
    # With augmentation on, the per-step train loss is measured on augmented images by a model
    # in training mode; the train-eval loss must be neither.
    proc = run_trainer(tmp_path, *TINY_2D, "--n_train=16", "--augment=true")
    assert proc.returncode == 0, proc.stderr
    import torch

    from trainer.model import build_model

    folder = only_run_dir(tmp_path)
    state = torch.load(folder / runs.LATEST, weights_only=True)  # the model after the last epoch
    cfg = build(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    data = load(cfg)

    def l1_decoding_z_mu(images: torch.Tensor) -> float:
        with torch.no_grad():
            z_mu, _ = model.encode(images)
            return (model.decode(z_mu) - images).abs().mean().item()

    last = runs.read_progress(folder)[-1]
    assert last[m.VAL_RECON] == pytest.approx(l1_decoding_z_mu(data.val), rel=1e-5)
    # SSIM and PSNR of those very reconstructions, as MONAI's own metrics compute them.
    from monai.metrics import PSNRMetric, SSIMMetric

    with torch.no_grad():
        recon = model.decode(model.encode(data.val)[0])
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0)(recon, data.val).mean().item()
    assert last[m.VAL_SSIM] == pytest.approx(ssim, rel=1e-4)
    psnr = PSNRMetric(max_val=1.0)(recon, data.val).mean().item()
    assert last[m.VAL_PSNR] == pytest.approx(psnr, rel=1e-4)
    # min(n_val=3, n_train=16 // 16) image: the first, unaugmented.
    subset = data.train[[0]]
    assert last[m.TRAIN_EVAL_RECON] == pytest.approx(l1_decoding_z_mu(subset), rel=1e-5)
    assert last[m.TRAIN_EVAL_RECON] != pytest.approx(last[m.TRAIN_RECON], rel=1e-3)
