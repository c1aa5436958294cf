"""Metric names of the metrics contract (SPEC section 2), defined once.

The trainer logs them, the analysis reads them, the sweeps optimise one of them and
the tests check them: import these constants, never retype the strings.
"""

from __future__ import annotations

import re

# Per optimizer step, against TRAIN_STEP.
TRAIN_STEP = "train/step"
TRAIN_RECON = "train/recon_loss"
TRAIN_KL = "train/kl_loss"
TRAIN_PERCEPTUAL = "train/perceptual_loss"
TRAIN_LOSS = "train/loss"
LR = "lr"
# Per optimizer step once the adversarial term is on (adv_weight > 0, after adv_warmup_epochs):
# the unweighted least-squares losses of the generator (the VAE) and of the discriminator.
TRAIN_GEN_LOSS = "train/gen_loss"
TRAIN_DISC_LOSS = "train/disc_loss"
# First batch of every epoch, against TRAIN_STEP.
TRAIN_TRIPLETS = "train/triplets"

# End of every epoch, against EPOCH.
EPOCH = "epoch"
VAL_RECON = "val/recon_loss"
VAL_KL = "val/kl_loss"
VAL_BEST_RECON = "val/best_recon_loss"
# The reconstruction loss of a fixed subset of training images measured exactly as validation
# is (eval mode, decoding z_mu, no augmentation), so the train/validation gap means something:
# the per-step TRAIN_RECON averages a moving model over augmented images.
TRAIN_EVAL_RECON = "train/eval_recon_loss"
# Reconstruction quality as MONAI measures it (trainer/quality.py), on the very reconstructions
# of VAL_RECON: the mean PSNR (dB) and SSIM per validation image; SSIM where the image holds its
# window, MS-SSIM where it holds its five scales (quality_keys). VAL_BEST_SSIM is the best
# VAL_SSIM so far, a sweep metric to maximize.
VAL_SSIM = "val/ssim"
VAL_PSNR = "val/psnr"
VAL_MS_SSIM = "val/ms_ssim"
VAL_BEST_SSIM = "val/best_ssim"
TIME_PER_EPOCH = "time_per_epoch"
# Training phase only (steps and their logging, no validation): what bench/ compares.
TRAIN_TIME_PER_EPOCH = "train_time_per_epoch"
VAL_TRIPLET_PREFIX = "val/triplet_step"
VAL_TRIPLET_PATTERN = re.compile(r"^val/triplet_step(\d{3,})$")

# Every per-epoch value, as the trainer also writes it to <output_dir>/runs/<run id>/progress.jsonl
# (TRAIN_RECON there is the epoch's mean); the local engine optimises and prunes on these.
PROGRESS_KEYS = (
    EPOCH,
    VAL_RECON,
    VAL_KL,
    VAL_BEST_RECON,
    TRAIN_RECON,
    TRAIN_EVAL_RECON,
    VAL_PSNR,
    TIME_PER_EPOCH,
    TRAIN_TIME_PER_EPOCH,
)
# After PROGRESS_KEYS, those the image size allows (quality_keys).
PROGRESS_OPTIONAL_KEYS = (VAL_SSIM, VAL_BEST_SSIM, VAL_MS_SSIM)
LOCAL_SWEEP_METRICS = (
    VAL_BEST_RECON,
    *(k for k in PROGRESS_KEYS + PROGRESS_OPTIONAL_KEYS if k not in (EPOCH, VAL_BEST_RECON)),
)
# MONAI's SSIM window (its side, Gaussian sigma 1.5) and MS-SSIM's scales, each half the last.
SSIM_WINDOW = 11
MS_SSIM_SCALES = 5


def quality_keys(image_size: int) -> tuple[str, ...]:
    """The quality scores measured at this image side: PSNR always; SSIM once the side holds
    the window; MS-SSIM once the side divided by 16 exceeds the window less one (MONAI's rule
    for five scales: at least 176)."""
    keys = [VAL_PSNR]
    if image_size >= SSIM_WINDOW:
        keys.append(VAL_SSIM)
    if image_size // (MS_SSIM_SCALES - 1) ** 2 > SSIM_WINDOW - 1:
        keys.append(VAL_MS_SSIM)
    return tuple(keys)


def progress_keys(image_size: int) -> tuple[str, ...]:
    """A progress row's keys, in order, at this image side."""
    scores = quality_keys(image_size)
    extra = (VAL_SSIM, VAL_BEST_SSIM) if VAL_SSIM in scores else ()
    return PROGRESS_KEYS + extra + tuple(k for k in scores if k == VAL_MS_SSIM)


# What sweeps optimise: a plain best-so-far scalar, so the run summary holds the best value.
SWEEP_METRIC = VAL_BEST_RECON
SWEEP_GOAL = "minimize"
# The way each metric a sweep may optimise improves; every other one is a loss (minimize).
MAXIMIZED = frozenset({VAL_SSIM, VAL_PSNR, VAL_MS_SSIM, VAL_BEST_SSIM})


def goal_of(metric: str) -> str:
    """``maximize`` for a quality score, ``minimize`` for a loss or a time."""
    return "maximize" if metric in MAXIMIZED else "minimize"


# Summary keys the trainer sets when a run ends.
SUMMARY_STATUS = "status"  # "finished", "stopped", "early_stopped", "preempted" or "diverged"
# A run that early_stop stopped: the epoch it stopped at (True/False: whether it did) and the
# overfitting test's reasons there, one line.
SUMMARY_STOPPED_EARLY = "stopped_early"
SUMMARY_EARLY_STOP_EPOCH = "early_stop_epoch"
SUMMARY_EARLY_STOP_WHY = "early_stop_why"
SUMMARY_DIVERGED = "diverged"  # True when a loss became NaN or inf
SUMMARY_BEST_EPOCH = "best_epoch"  # epoch of val/best_recon_loss
SUMMARY_EPOCHS = "epochs_completed"
SUMMARY_PARAMETERS = "parameters"  # trainable parameters of the model
SUMMARY_RUN_DIR = "run_dir"  # where checkpoint.pt, best.pt and progress.jsonl are
# References the trainer records once per run, so a verdict of "high" needs no sibling run.
SUMMARY_INIT_VAL_RECON = "init_val_recon_loss"  # val/recon_loss before the first optimizer step
SUMMARY_TRIVIAL_VAL_RECON = "trivial_val_recon_loss"  # val loss of the mean training image
# Where start-up time goes: seconds to have both data splits ready (decoded, or from the disk
# cache), whether the cache already held them, and whether training streams them from disk.
SUMMARY_DATA_SECONDS = "data_seconds"
SUMMARY_DATA_CACHE_HIT = "data_cache_hit"
SUMMARY_DATA_STREAMED = "data_streamed"
STATUS_FINISHED, STATUS_STOPPED = "finished", "stopped"
STATUS_PREEMPTED, STATUS_DIVERGED = "preempted", "diverged"
# The run stopped itself (early_stop): its overfitting test held. It finished, exit status 0.
STATUS_EARLY_STOPPED = "early_stopped"


def val_triplet_key(index: int) -> str:
    """``val/triplet_step000`` for the first validation sample, and so on."""
    return f"{VAL_TRIPLET_PREFIX}{index:03d}"
