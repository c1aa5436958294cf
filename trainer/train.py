"""One training run, as ``wandb agent`` (or the local engine) starts it: the flat loop.

Importing this module loads torch, MONAI and wandb but initialises no CUDA, installs no
signal handler and starts no run, so a fork server can import it once and call
``trainer.cli.main(argv)`` in each forked child.

``trainer.cli`` locks the run folder (``contract.runs``) before it calls ``run``. Stages:
``prepare`` (device, data, optional perceptual loss, the run's checkpoint checked against the
config: bad input fails here, before W&B starts) -> ``wandb.init`` (a sweep's values in
``run.config`` win; checked again) -> ``setup`` (model, optimizer, the checkpoint restored and
the progress rows it holds that the file lacks) -> for each epoch: ``start_epoch``,
``train_step`` per batch, then ``end_epoch`` (validation, epoch row, checkpoint, progress row),
or ``interrupt`` (a mid-epoch checkpoint) on a signal -> ``finish``
(summary and exit status). The stages share one ``State``; none is passed to another. A test
may hold the loop at one step or epoch end (``trainer.hold``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import wandb
from tqdm import tqdm

from contract import metrics as m
from contract import runs, trends
from contract.config import Config, build
from contract.errors import (
    EXIT_CRASHED,
    EXIT_DIVERGED,
    EXIT_FINISHED,
    EXIT_PREEMPTED,
    USER_ERROR_EXIT,
    UserError,
)
from trainer import checkpoint, hold, logger, quality
from trainer import data as datasets
from trainer.model import (
    build_discriminator,
    build_model,
    build_perceptual,
    discriminator_loss,
    forward,
    generator_loss,
    losses,
    recon_loss,
)

DEFAULT_PROJECT = "vae-sweeps"
# The train-eval subset holds as many images as the validation set, but at most 1/16 of the
# training set: its forward passes then cost at most ~2% of an epoch's steps (a step is a
# forward and a backward pass, about three forwards), whatever the split sizes.
TRAIN_EVAL_SHARE = 16


class Signals:
    """SIGTERM (stop) and SIGUSR1 (preemption) only set flags; the loop acts between steps."""

    def __init__(self) -> None:
        self.stop = False
        self.preempt = False
        # Set once the last epoch is trained: a signal from then on cuts nothing short (an
        # agent whose prune or stop decision came late records the trial COMPLETE).
        self.trained_out = False
        # Set when the run stops itself (early_stop): it finished, whatever signal follows.
        self.early_stopped = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_preempt)

    def _on_stop(self, signum, frame) -> None:
        self.stop = True

    def _on_preempt(self, signum, frame) -> None:
        self.preempt = True

    @property
    def pending(self) -> bool:
        return self.stop or self.preempt

    @property
    def stopped(self) -> bool:
        """A stop signal cut the run short."""
        return self.stop and not self.trained_out

    @property
    def preempted(self) -> bool:
        """A preemption signal cut the run short."""
        return self.preempt and not self.trained_out


@dataclass
class Prepared:
    """Everything built from the config before training that can fail on bad input."""

    cfg: Config
    device: torch.device
    amp_dtype: torch.dtype | None
    data: datasets.Data
    perceptual: torch.nn.Module | None
    folder: Path  # the run folder, locked by this process
    resume: dict | None  # the run's checkpoint, checked against cfg and data (None: a new run)
    hold: hold.Hold | None  # a test's hold point (trainer.hold), None in normal use


def resolve_device(cfg: Config) -> tuple[torch.device, torch.dtype | None]:
    """CUDA when present (bf16 autocast where supported, else fp16 + GradScaler), else CPU fp32."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        bf16_ok = torch.cuda.is_bf16_supported()
        if cfg.precision == "auto":
            return torch.device("cuda"), torch.bfloat16 if bf16_ok else torch.float16
        if cfg.precision == "bf16" and not bf16_ok:
            raise UserError(
                "precision='bf16': this GPU does not support bfloat16; use fp16 or auto"
            )
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        return torch.device("cuda"), dtypes[cfg.precision]
    if cfg.precision == "fp16":
        raise UserError("precision='fp16' needs a CUDA GPU; use auto, fp32 or bf16 on CPU")
    return torch.device("cpu"), torch.bfloat16 if cfg.precision == "bf16" else None


def prepare(cfg: Config, folder: Path) -> Prepared:
    device, amp_dtype = resolve_device(cfg)
    data = datasets.load(cfg)
    latest = folder / runs.LATEST
    # A checkpoint that this config may not resume is refused here, before W&B starts.
    resume = checkpoint.read(latest, cfg.to_dict(), len(data.train)) if latest.exists() else None
    return Prepared(
        cfg, device, amp_dtype, data, build_perceptual(cfg), folder, resume, hold.from_env()
    )


def run(cfg: Config, lock: runs.RunLock) -> int:
    """Train one run in its locked folder; returns the exit status (README: 0, 2, 3 or 75) and
    records a run that trained to its end in ``exit.json`` (``trainer.cli`` records the rest)."""
    signals = Signals()
    signals.install()
    code = run_locked(cfg, lock.folder, signals)
    status, reason = ENDINGS[code]
    if code == EXIT_FINISHED and signals.stopped:
        status, reason = m.STATUS_STOPPED, "SIGTERM"
    elif code == EXIT_FINISHED and signals.early_stopped:
        status, reason = m.STATUS_EARLY_STOPPED, "early_stop: the overfitting test held"
    runs.write_exit(lock, status, code, reason)
    return code


# Exit status of a run that trained -> (exit record status, reason).
ENDINGS = {
    EXIT_FINISHED: (m.STATUS_FINISHED, None),
    EXIT_PREEMPTED: (m.STATUS_PREEMPTED, "SIGUSR1"),
    EXIT_DIVERGED: (m.STATUS_DIVERGED, "a loss became NaN or infinite"),
}


def run_locked(cfg: Config, folder: Path, signals: Signals) -> int:
    """The run, its folder locked: data, W&B, training, W&B's exit status."""
    tty = sys.stdout.isatty()  # before wandb wraps stdout to capture the console
    prepared = prepare(cfg, folder)
    # The locked folder's id, where wandb reads it (under a sweep it ignores wandb.init(id=)).
    os.environ["WANDB_RUN_ID"] = folder.name
    try:
        wandb_run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            # Beside the runs, unless WANDB_DIR says otherwise (output_dir holds the run folder).
            dir=None if os.environ.get("WANDB_DIR") else cfg.output_dir,
            config=cfg.to_dict(),
            # A requeued or restarted run comes back with the same WANDB_RUN_ID.
            resume=os.environ.get("WANDB_RESUME") or "allow",
        )
    except (wandb.errors.AuthenticationError, wandb.errors.CommError) as exc:
        raise UserError(f"W&B: {first_line(exc)}{LOGIN_HINT}") from None
    except wandb.errors.UsageError as exc:
        # W&B refusing a setting (a project name...) states its rule: a login hint would mislead.
        # Only its missing-login error ("No API key configured. Use `wandb login`") gets it.
        hint = LOGIN_HINT if "login" in first_line(exc) else ""
        raise UserError(f"W&B: {first_line(exc)}{hint}") from None
    try:
        # run.config holds the sweep's values (WANDB_SWEEP_PARAM_PATH): the final authority.
        final = build(dict(wandb_run.config))
        if final.output_dir != cfg.output_dir:
            raise UserError(
                f"output_dir={final.output_dir!r} in the run's W&B config, but this process "
                f"holds the run folder under output_dir={cfg.output_dir!r}: pass the same value"
            )
        if final != cfg:
            prepared = prepare(final, folder)
        code = train(prepared, wandb_run, signals, tty)
    except UserError:
        wandb_run.finish(exit_code=USER_ERROR_EXIT)
        raise
    except ConnectionError:  # what wandb raises once its service is gone
        if not signals.pending:
            wandb_run.finish(exit_code=EXIT_CRASHED)
            raise
        # A scheduler's cancel signals every process of the job, W&B's service too. Rows logged
        # after the signal are dropped (StepRows.log), so training still reached the stop's
        # checkpoint unless this came from before it (setup) or after it (the summary).
        print(
            f"run {folder.name}: W&B's service was stopped with the job; the run resumes from"
            " its last checkpoint"
        )
        return EXIT_PREEMPTED if signals.preempted else EXIT_FINISHED
    except BaseException:
        wandb_run.finish(exit_code=EXIT_CRASHED)
        raise
    wandb_run.finish(exit_code=code)
    return code


LOGIN_HINT = " (run `wandb login`, or set WANDB_MODE=offline to log locally)"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class State:
    """One run while it trains: built by ``setup``, advanced by the stages below."""

    cfg: Config
    device: torch.device
    amp_dtype: torch.dtype | None
    perceptual: torch.nn.Module | None
    run: wandb.Run
    signals: Signals
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its torch.compile wrapper: what the steps call
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # one for both optimizers, updated once per step
    disc: torch.nn.Module | None  # the adversarial term's discriminator (adv_weight > 0)
    disc_optimizer: torch.optim.Optimizer | None
    folder: Path
    pos: checkpoint.Position
    rows: logger.StepRows
    train_x: datasets.Split  # on the device, or streamed from the disk cache
    val_x: datasets.Split
    # Fixed training images whose loss is measured at each epoch's end exactly as validation's
    # (TRAIN_EVAL_RECON); see TRAIN_EVAL_SHARE for how many.
    train_eval_x: datasets.Split
    quality: quality.Quality  # SSIM, PSNR (MS-SSIM) of validation's reconstructions
    n_steps: int
    # Online, a resumed run's summary holds the last train/step and epoch the server has; a
    # restart from an older checkpoint (after a hard kill) then re-trains those steps without
    # logging them again. Offline runs resume empty: the analysis keeps the later row.
    logged_step: int
    logged_epoch: int
    listed: set[int]  # epochs progress.jsonl has a row for: a row is final, never written twice
    # early_stop: whether the overfitting test held on the curve up to each epoch so far, the
    # epochs before this process included (read back from progress.jsonl).
    held: list[bool]
    tty: bool
    hold: hold.Hold | None
    # The epoch in progress.
    epoch: int = 0
    started: float = 0.0  # perf_counter at its start, less the time a resumed part already took
    epoch_recon: float = 0.0  # sum of train/recon_loss over its flushed steps
    bar: tqdm | None = None


def train(p: Prepared, run: wandb.Run, signals: Signals, tty: bool) -> int:
    """Setup, then epochs of (steps, end of epoch), then the summary: returns the exit status."""
    s = setup(p, run, signals, tty)
    for epoch in range(s.pos.epoch + 1, s.cfg.max_epochs + 1):
        start_epoch(s, epoch)
        for i, batch in enumerate(
            datasets.train_batches(s.train_x, s.cfg, epoch, s.pos.batch), start=s.pos.batch
        ):
            if signals.pending:
                break
            if not train_step(s, i, batch):
                return diverged(s)
            if s.hold is not None:
                s.hold.wait("step", s.pos.step, s.folder, lambda: signals.pending)
        if signals.pending:
            if not interrupt(s):
                return diverged(s)
            break
        if not end_epoch(s):
            return diverged(s)
        if s.hold is not None:
            s.hold.wait("epoch", epoch, s.folder, lambda: signals.pending)
        if s.cfg.early_stop and epoch < s.cfg.max_epochs and stop_early(s):
            break
    signals.trained_out = s.pos.epoch >= s.cfg.max_epochs or signals.early_stopped
    if s.hold is not None:
        s.hold.wait("end", s.pos.epoch, s.folder, lambda: signals.pending)
    if signals.preempted:
        run.mark_preempting()
        finish(s, m.STATUS_PREEMPTED)
        return EXIT_PREEMPTED
    if signals.early_stopped:
        finish(s, m.STATUS_EARLY_STOPPED)
    else:
        finish(s, m.STATUS_STOPPED if signals.stopped else m.STATUS_FINISHED)
    return EXIT_FINISHED


def overfits(rows: list[dict]) -> tuple[bool, list[str], dict]:
    """The analysis's overfitting test (contract.trends) on the curve of these progress rows."""
    epochs = [r[m.EPOCH] for r in rows]
    val, train, train_eval = (
        [float(r.get(k, math.nan)) for r in rows]
        for k in (m.VAL_RECON, m.TRAIN_RECON, m.TRAIN_EVAL_RECON)
    )
    return trends.overfit_test(epochs, val, train, train_eval, trends.DEFAULTS)


def stop_early(s: State) -> bool:
    """After an epoch, with early_stop: has the overfitting test held on the whole curve so far
    (read from progress.jsonl, so a resumed run judges the epochs before it too) for the last
    ``early_stop_patience`` share of the epochs? Then say why in the summary and stop."""
    rows = [r for r in runs.read_progress(s.folder) if r[m.EPOCH] <= s.pos.epoch]
    over, why, numbers = overfits(rows)
    s.held.append(over)
    if not trends.should_stop(s.held, s.cfg.early_stop_patience):
        return False
    s.signals.early_stopped = True
    said = "; ".join(why)
    s.run.summary.update(
        {
            m.SUMMARY_STOPPED_EARLY: True,
            m.SUMMARY_EARLY_STOP_EPOCH: s.pos.epoch,
            m.SUMMARY_EARLY_STOP_WHY: said,
            **{f"early_stop/{k}": v for k, v in numbers.items() if isinstance(v, (int, float))},
        }
    )
    held = trends.patience(s.cfg.early_stop_patience, len(s.held))
    print(
        f"run {s.run.id}: overfitting (early_stop): the test held for the last {held} epochs;"
        f" stopped early at epoch {s.pos.epoch} (best epoch {s.pos.best_epoch}): {said}",
        flush=True,
    )
    return True


def setup(p: Prepared, run: wandb.Run, signals: Signals, tty: bool) -> State:
    """Model, optimizer and data on the device; the run's checkpoint restored if there is one;
    the run's references (``references``) in its summary."""
    cfg, device = p.cfg, p.device
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=p.amp_dtype == torch.float16)
    disc = build_discriminator(cfg)
    disc_optimizer = None
    if disc is not None:
        disc = disc.to(device)
        disc_optimizer = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr)
    folder = p.folder
    pos = checkpoint.Position(train_images=len(p.data.train))
    if p.resume is not None:
        pos = checkpoint.restore(p.resume, model, optimizer, scaler, disc, disc_optimizer)
        p.resume = None  # the state's tensors are the model's now: let the copy go
    # Rows the checkpoint holds and the file lacks: a kill came between the two.
    runs.restore_progress(folder, pos.rows)
    logged_step = max(pos.step, int(run.summary.get(m.TRAIN_STEP) or 0))
    logged_epoch = max(pos.epoch, int(run.summary.get(m.EPOCH) or 0))
    logger.define_metrics(run)
    n_params = sum(t.numel() for t in model.parameters() if t.requires_grad)
    run.summary.update(
        {
            m.SUMMARY_PARAMETERS: n_params,
            m.SUMMARY_RUN_DIR: str(folder.resolve()),  # found from any folder (the analysis)
            m.SUMMARY_DATA_SECONDS: p.data.seconds,
            m.SUMMARY_DATA_CACHE_HIT: p.data.cache_hit,
            m.SUMMARY_DATA_STREAMED: p.data.streamed,
        }
    )
    # Without augmentation an in-memory training set lives on the device: no copies per step.
    train_x = p.data.train if cfg.augment else datasets.to_device(p.data.train, device)
    s = State(
        cfg=cfg,
        device=device,
        amp_dtype=p.amp_dtype,
        perceptual=p.perceptual,
        run=run,
        signals=signals,
        model=model,
        net=torch.compile(model) if cfg.compile else model,
        optimizer=optimizer,
        scaler=scaler,
        disc=disc,
        disc_optimizer=disc_optimizer,
        folder=folder,
        pos=pos,
        rows=logger.StepRows(run, log_from_step=logged_step, stopping=lambda: signals.pending),
        train_x=train_x,
        val_x=datasets.to_device(p.data.val, device),
        train_eval_x=datasets.spread_subset(
            train_x, min(len(p.data.val), max(1, len(train_x) // TRAIN_EVAL_SHARE))
        ),
        quality=quality.Quality(cfg.spatial_dims, cfg.image_size, device),
        n_steps=datasets.steps_per_epoch(len(train_x), cfg.batch_size),
        logged_step=logged_step,
        logged_epoch=logged_epoch,
        listed={row[m.EPOCH] for row in runs.read_progress(folder)},
        held=[],
        tty=tty,
        hold=p.hold,
    )
    run.summary.update(references(s))
    if cfg.early_stop:
        rows = [r for r in runs.read_progress(folder) if r[m.EPOCH] <= pos.epoch]
        s.held = [overfits(rows[:t])[0] for t in range(1, len(rows) + 1)]
    precision = str(p.amp_dtype).removeprefix("torch.") if p.amp_dtype else "fp32"
    resumed = f", resumed at epoch {pos.epoch + 1} step {pos.step}" if pos.step else ""
    adversarial = (
        f"; adversarial term x{cfg.adv_weight:g} from epoch {cfg.adv_warmup_epochs + 1}"
        if disc is not None
        else ""
    )
    print(
        f"run {run.id}: {p.data.description}; {n_params:,} parameters on {device.type} "
        f"({precision}){adversarial}; checkpoints in {folder}{resumed}",
        flush=True,
    )
    return s


def autocast(s: State):
    if s.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(s.device.type, dtype=s.amp_dtype)


def start_epoch(s: State, epoch: int) -> None:
    """Clock, running sums (carried over by a mid-epoch checkpoint) and progress bar."""
    s.epoch = epoch
    s.started = time.perf_counter() - s.pos.epoch_seconds
    s.epoch_recon = s.pos.epoch_recon_sum
    s.bar = (
        tqdm(
            total=s.n_steps,
            initial=s.pos.batch,
            desc=f"epoch {epoch}/{s.cfg.max_epochs}",
            file=sys.stdout,
            unit="step",
        )
        if s.tty
        else None
    )
    s.model.train()
    if s.disc is not None:
        s.disc.train()


def train_step(s: State, i: int, batch: torch.Tensor) -> bool:
    """One optimizer step on batch ``i`` of the epoch; False when a flushed loss is not finite."""
    cfg, pos = s.cfg, s.pos
    x = batch.to(s.device, non_blocking=True)
    adversarial = s.disc is not None and s.epoch > cfg.adv_warmup_epochs
    with autocast(s):
        recon, z_mu, z_sigma = forward(s.net, x, sample=True)
        out = losses(x, recon, z_mu, z_sigma, cfg, s.perceptual)
        if adversarial:
            out["gen"] = generator_loss(s.disc, recon)
            out["total"] = out["total"] + cfg.adv_weight * out["gen"]
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(out["total"]).backward()
    s.scaler.step(s.optimizer)
    if adversarial:  # MONAI's recipe: the discriminator's step follows the VAE's, same weight
        with autocast(s):
            out["disc"] = discriminator_loss(s.disc, x, recon)
        s.disc_optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(cfg.adv_weight * out["disc"]).backward()
        s.scaler.step(s.disc_optimizer)
    s.scaler.update()
    pos.step += 1
    pos.batch = i + 1
    # The guide's train/triplets: first batch of every epoch.
    s.rows.add(pos.step, out, (x[0], recon[0]) if i == 0 else None)
    # Losses reach the host only here (every log_every steps and at the end of the epoch).
    if len(s.rows) >= cfg.log_every or pos.batch == s.n_steps:
        if not flush(s):
            return False
        if s.bar is not None:
            s.bar.set_postfix_str(f"recon {s.rows.last_recon:.4f}", refresh=False)
    if s.bar is not None:
        s.bar.update(1)
    return True


def flush(s: State) -> bool:
    """Send buffered step rows to W&B; False when a loss is NaN or infinite."""
    recons, finite = s.rows.flush()
    s.epoch_recon += sum(recons)
    return finite


def close_bar(s: State) -> None:
    if s.bar is not None:
        s.bar.close()
        s.bar = None


def interrupt(s: State) -> bool:
    """A signal arrived mid-epoch: flush, then a checkpoint the restart resumes from (skipping
    the batches already done). False when a flushed loss is not finite."""
    close_bar(s)
    if not flush(s):
        return False
    s.pos.epoch_seconds = time.perf_counter() - s.started
    s.pos.epoch_recon_sum = s.epoch_recon
    save(s, s.folder / runs.LATEST)
    return True


def end_epoch(s: State) -> bool:
    """Validate, log the epoch row, checkpoint, append the progress row; False when a
    validation loss is not finite."""
    cfg, pos, epoch = s.cfg, s.pos, s.epoch
    train_seconds = time.perf_counter() - s.started
    val_recon, val_kl, train_eval, scores, triplets = validate(s)
    if not all(math.isfinite(v) for v in (val_recon, val_kl, train_eval)):
        return False
    improved = val_recon < pos.best_val
    if improved:
        pos.best_val, pos.best_epoch = val_recon, epoch
    if m.VAL_SSIM in scores:
        pos.best_ssim = max(pos.best_ssim, scores[m.VAL_SSIM])
        scores[m.VAL_BEST_SSIM] = pos.best_ssim
    seconds = time.perf_counter() - s.started
    pos.epoch, pos.batch, pos.epoch_seconds, pos.epoch_recon_sum = epoch, 0, 0.0, 0.0
    train_recon = s.epoch_recon / s.n_steps
    if epoch > s.logged_epoch:
        s.rows.log(
            {
                m.EPOCH: epoch,
                m.VAL_RECON: val_recon,
                m.VAL_KL: val_kl,
                m.VAL_BEST_RECON: pos.best_val,
                m.TRAIN_EVAL_RECON: train_eval,
                **scores,
                m.TIME_PER_EPOCH: seconds,
                m.TRAIN_TIME_PER_EPOCH: train_seconds,
                **triplets,
            }
        )
    row = {
        m.EPOCH: epoch,
        m.VAL_RECON: val_recon,
        m.VAL_KL: val_kl,
        m.VAL_BEST_RECON: pos.best_val,
        m.TRAIN_RECON: train_recon,
        m.TRAIN_EVAL_RECON: train_eval,
        m.VAL_PSNR: scores[m.VAL_PSNR],
        m.TIME_PER_EPOCH: seconds,
        m.TRAIN_TIME_PER_EPOCH: train_seconds,
        **{k: scores[k] for k in m.PROGRESS_OPTIONAL_KEYS if k in scores},
    }
    pos.rows.append(row)  # the checkpoint carries it: a kill before the append loses nothing
    save(s, s.folder / runs.LATEST)
    if improved:
        checkpoint.copy(s.folder / runs.LATEST, s.folder / runs.BEST)
    if epoch not in s.listed:  # after the checkpoint: a listed epoch is never trained again
        runs.append_progress(s.folder, row)
        s.listed.add(epoch)
    close_bar(s)
    print(
        f"epoch {epoch}/{cfg.max_epochs}  {m.TRAIN_RECON} {train_recon:.4f}  "
        f"{m.VAL_RECON} {val_recon:.4f}  best {pos.best_val:.4f} (epoch {pos.best_epoch})  "
        f"{seconds:.1f} s",
        flush=True,
    )
    return True


def save(s: State, path: Path) -> None:
    checkpoint.save(
        path, s.model, s.optimizer, s.scaler, s.pos, s.cfg.to_dict(), s.disc, s.disc_optimizer
    )


def finish(s: State, status: str) -> None:
    """The run's summary and its last line."""
    run, pos = s.run, s.pos
    run.summary[m.SUMMARY_STATUS] = status
    run.summary[m.SUMMARY_DIVERGED] = status == m.STATUS_DIVERGED
    run.summary[m.SUMMARY_EPOCHS] = pos.epoch
    if math.isfinite(pos.best_val):  # also in a resumed segment that finished no epoch
        run.summary[m.VAL_BEST_RECON] = pos.best_val
        run.summary[m.SUMMARY_BEST_EPOCH] = pos.best_epoch
    if math.isfinite(pos.best_ssim):
        run.summary[m.VAL_BEST_SSIM] = pos.best_ssim
    where = Path(run.dir).parent
    view = f"; view: wandb leet {where}; upload: wandb sync {where}" if run.offline else ""
    view = f"; {run.url}" if run.url else view
    early = ""
    if status == m.STATUS_EARLY_STOPPED:
        early = f" (overfitting: stopped early at epoch {pos.epoch}, best epoch {pos.best_epoch})"
    print(f"run {run.id} {status} after {pos.epoch} epochs{early}{view}", flush=True)


def diverged(s: State) -> int:
    """A NaN/inf loss: stop at once, keep the last good checkpoint, mark the run."""
    close_bar(s)
    finish(s, m.STATUS_DIVERGED)
    print(
        f"run {s.run.id}: loss became NaN or infinite, stopped (exit {EXIT_DIVERGED})", flush=True
    )
    return EXIT_DIVERGED


@torch.no_grad()
def validate(s: State):
    """Sample-weighted mean losses over the validation set (z_mu decoded), the same
    reconstruction loss over the fixed training subset (not augmented), SSIM, PSNR (MS-SSIM)
    of the validation reconstructions, and the validation triplets. One host sync for all the
    values."""
    cfg, val_x = s.cfg, s.val_x
    s.net.eval()
    cap = len(val_x) if cfg.max_val_triplets is None else min(cfg.max_val_triplets, len(val_x))
    recon_sum = torch.zeros((), device=s.device)
    kl_sum = torch.zeros((), device=s.device)
    scores_sum = s.quality.zeros(s.device)
    triplets = {}
    for start, x in datasets.val_batches(val_x, cfg.batch_size, s.device):
        with autocast(s):
            recon, z_mu, z_sigma = forward(s.net, x, sample=False)
            out = losses(x, recon, z_mu, z_sigma, cfg, s.perceptual)
        recon_sum += out["recon"] * len(x)
        kl_sum += out["kl"] * len(x)
        scores_sum += s.quality.sums(x, recon)
        for j in range(min(len(x), cap - start)):
            what = f"validation sample {start + j}, epoch {s.epoch}"
            triplets[m.val_triplet_key(start + j)] = logger.triplet_image(x[j], recon[j], what)
    train_sum = torch.zeros((), device=s.device)
    for _, x in datasets.val_batches(s.train_eval_x, cfg.batch_size, s.device):
        with autocast(s):
            train_sum += recon_loss(x, forward(s.net, x, sample=False)[0], cfg) * len(x)
    s.net.train()
    recon_sum, kl_sum, train_sum, *scores = torch.cat(
        [torch.stack([recon_sum, kl_sum, train_sum]), scores_sum]
    ).tolist()
    n_val, n_train = len(val_x), len(s.train_eval_x)
    scores = {k: v / n_val for k, v in zip(s.quality.keys, scores, strict=True)}
    return recon_sum / n_val, kl_sum / n_val, train_sum / n_train, scores, triplets


@torch.no_grad()
def references(s: State) -> dict[str, float]:
    """The run's own references for judging "high" without sibling runs, as summary keys.

    Measured once, with ``validate``'s loss and sample weights, and kept in the checkpoint
    position so that every resumed segment writes them again: the validation loss of the
    untrained model (only before the first step; a checkpoint without it stays without), and
    that of a trivial reconstruction, the mean training image, for every validation sample.
    """
    pos, val_x = s.pos, s.val_x

    def val_recon(reconstruct) -> float:
        total = torch.zeros((), device=s.device)
        for _, x in datasets.val_batches(val_x, s.cfg.batch_size, s.device):
            with autocast(s):
                total += recon_loss(x, reconstruct(x), s.cfg) * len(x)
        return (total / len(val_x)).item()

    if pos.step == 0 and not math.isfinite(pos.init_val_recon):
        s.net.eval()
        pos.init_val_recon = val_recon(lambda x: forward(s.net, x, sample=False)[0])
        s.net.train()
    if not math.isfinite(pos.trivial_val_recon):
        mean = datasets.mean_image(s.train_x).to(s.device)
        pos.trivial_val_recon = val_recon(lambda x: mean.expand_as(x))
    values = {
        m.SUMMARY_INIT_VAL_RECON: pos.init_val_recon,
        m.SUMMARY_TRIVIAL_VAL_RECON: pos.trivial_val_recon,
    }
    return {k: v for k, v in values.items() if math.isfinite(v)}
