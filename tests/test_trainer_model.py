"""The VAE, its losses, the optional perceptual loss and checkpoints, on tiny real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contract import metrics as m
from contract import runs
from contract.config import build
from contract.errors import UserError
from trainer import checkpoint, logger
from trainer.model import (
    ADVERSARIAL,
    build_discriminator,
    build_model,
    build_perceptual,
    discriminator_loss,
    forward,
    generator_loss,
    kl_loss,
    losses,
)

TINY = {"channels": [4, 4, 4], "norm_num_groups": 4, "image_size": 16, "latent_channels": 2}


@pytest.mark.parametrize("dims", [2, 3])
def test_model_follows_len_channels_and_keeps_the_size(dims: int) -> None:
    cfg = build({**TINY, "spatial_dims": dims, "num_res_blocks": [1, 2, 1]})
    model = build_model(cfg)
    x = torch.rand(2, 1, *(16,) * dims)
    recon, z_mu, z_sigma = forward(model, x, sample=True)
    assert recon.shape == x.shape
    assert z_mu.shape == (2, 2, *(4,) * dims) and z_sigma.shape == z_mu.shape
    deterministic = [forward(model.eval(), x, sample=False)[0] for _ in range(2)]
    assert torch.equal(*deterministic)  # validation decodes z_mu: no sampling noise
    assert len(model.encoder.blocks) > len(
        build_model(build({**TINY, "spatial_dims": dims})).encoder.blocks
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_kl_is_the_monai_recipe(dims: int) -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 2, *(4,) * dims, generator=g)
    sigma = torch.rand(3, 2, *(4,) * dims, generator=g) + 0.5
    expected = np.mean(
        [
            0.5 * np.sum(m**2 + s**2 - np.log(s**2) - 1)
            for m, s in zip(
                mu.numpy().astype(np.float64), sigma.numpy().astype(np.float64), strict=True
            )
        ]
    )
    assert float(kl_loss(mu, sigma)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_loss(torch.zeros_like(mu), torch.ones_like(sigma))) == 0.0


@pytest.mark.parametrize(("name", "fn"), [("l1", F.l1_loss), ("l2", F.mse_loss)])
def test_recon_loss_and_total(name: str, fn) -> None:
    cfg = build({**TINY, "recon_loss": name, "kl_weight": 0.5})
    x, recon = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    mu, sigma = torch.randn(2, 2, 4, 4), torch.rand(2, 2, 4, 4) + 0.5
    out = losses(x, recon, mu, sigma, cfg, perceptual=None)
    assert float(out["recon"]) == pytest.approx(float(fn(recon, x)))
    assert float(out["total"]) == pytest.approx(float(out["recon"] + 0.5 * out["kl"]))
    assert "perceptual" not in out


def test_perceptual_off_by_default_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert build_perceptual(build(TINY)) is None
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    for network in ("squeeze", "alex", "resnet50", "radimagenet_resnet50"):
        cfg = build({**TINY, "perceptual_weight": 1e-3, "perceptual_network": network})
        with pytest.raises(UserError) as err:
            build_perceptual(cfg)
        message = str(err.value)
        assert "\n" not in message and "perceptual_weight=0" in message
        assert (
            "vae-sweeps[perceptual]" in message
            or "torch hub cache" in message
            or "local" in message
        )
    assert not (tmp_path / "empty-hub").exists() or not any((tmp_path / "empty-hub").rglob("*.pth"))
    cfg = build(
        {
            **TINY,
            "perceptual_weight": 1e-3,
            "perceptual_network": "resnet50",
            "perceptual_weights_path": str(tmp_path / "missing.pth"),
        }
    )
    with pytest.raises(UserError, match="missing.pth'?: file not found"):
        build_perceptual(cfg)


def test_checkpoint_round_trip_and_resume_guards(tmp_path: Path) -> None:
    cfg = build(TINY)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    row = {m.EPOCH: 2, m.VAL_RECON: 0.5}
    pos = checkpoint.Position(epoch=2, batch=1, step=9, best_val=0.5, best_epoch=2)
    pos.init_val_recon, pos.trivial_val_recon = 0.9, 0.7  # nan by default: never equal
    pos.train_images, pos.rows = 8, [row]
    path = tmp_path / "runs" / "x" / runs.LATEST
    torch.manual_seed(5)
    checkpoint.save(path, model, opt, scaler, pos, cfg.to_dict())
    expected_draw = torch.rand(3)
    assert not path.with_name(path.name + ".tmp").exists()

    restored = build_model(cfg)
    opt2 = torch.optim.Adam(restored.parameters(), lr=1e-3)
    back = checkpoint.restore(checkpoint.read(path, cfg.to_dict(), 8), restored, opt2, scaler)
    assert back == pos and back.rows == [row]
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG continues where it was saved
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    other = build({**TINY, "channels": [8, 8, 8]})
    with pytest.raises(UserError, match=r"written with channels=\[4, 4, 4\], this run has"):
        checkpoint.read(path, other.to_dict(), 8)
    for key, value in (("batch_size", 2), ("n_train", 16), ("seed", 1), ("lr", 1e-3)):
        changed = build({**TINY, key: value}).to_dict()
        with pytest.raises(UserError, match=rf"written with {key}=.*this run has {key}="):
            checkpoint.read(path, changed, 8)
    with pytest.raises(UserError, match="trained on 8 training images, this run has 6"):
        checkpoint.read(path, cfg.to_dict(), 6)
    longer = build({**TINY, "max_epochs": 50, "log_every": 3}).to_dict()
    assert checkpoint.read(path, longer, 8)["position"]["epoch"] == 2  # training on is allowed


ADV = {**TINY, "adv_weight": 0.01, "disc_channels": 4, "disc_layers": 2}


@pytest.mark.parametrize("dims", [2, 3])
def test_adversarial_losses_are_monai_least_squares(dims: int) -> None:
    from monai.losses import PatchAdversarialLoss

    assert build_discriminator(build(TINY)) is None  # off by default
    disc = build_discriminator(build({**ADV, "spatial_dims": dims}))
    g = torch.Generator().manual_seed(0)
    x, recon = (torch.rand(2, 1, *(16,) * dims, generator=g) for _ in range(2))
    monai = PatchAdversarialLoss(criterion="least_squares")
    fake, real = disc(recon)[-1], disc(x)[-1]
    assert fake.shape == (2, 1, *(2,) * dims)  # 16 / 2**2 - 2 patches per side
    for logits in (fake, real):
        for is_real in (True, False):
            ours = ADVERSARIAL(logits, target_is_real=is_real, for_discriminator=True)
            assert torch.equal(ours, monai(logits, target_is_real=is_real, for_discriminator=True))
    expected_gen = monai(fake, target_is_real=True, for_discriminator=False)
    assert torch.equal(generator_loss(disc, recon), expected_gen)
    expected_disc = 0.5 * (
        monai(fake, target_is_real=False, for_discriminator=True)
        + monai(real, target_is_real=True, for_discriminator=True)
    )
    recon.requires_grad_(True)
    loss = discriminator_loss(disc, x, recon)
    assert torch.allclose(loss, expected_disc)
    loss.backward()
    assert recon.grad is None  # the discriminator's loss never trains the VAE


def test_checkpoint_keeps_the_discriminator_and_refuses_to_change_it(tmp_path: Path) -> None:
    cfg = build(ADV)
    model, disc = build_model(cfg), build_discriminator(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=5e-4)
    disc(torch.rand(2, 1, 16, 16))[-1].mean().backward()
    disc_opt.step()  # Adam state and BatchNorm statistics to restore
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = tmp_path / runs.LATEST
    checkpoint.save(path, model, opt, scaler, checkpoint.Position(), cfg.to_dict(), disc, disc_opt)

    restored = build_discriminator(cfg)
    restored_opt = torch.optim.Adam(restored.parameters(), lr=5e-4)
    state = checkpoint.read(path, cfg.to_dict(), 8)
    checkpoint.restore(state, build_model(cfg), opt, scaler, restored, restored_opt)
    for a, b in zip(disc.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert restored_opt.state_dict()["state"][0]["step"] == 1

    for change in ({"adv_weight": 0.0}, {"disc_channels": 8}, {"disc_lr": 1e-4}):
        key = next(iter(change))
        with pytest.raises(UserError, match=f"written with {key}="):
            checkpoint.read(path, {**cfg.to_dict(), **change}, 8)


@pytest.mark.parametrize("dims", [2, 3])
def test_triplet_panels_on_a_fixed_scale(dims: int) -> None:
    original = torch.zeros(1, *(8,) * dims)
    recon = torch.full((1, *(8,) * dims), 2.0)  # out of range: clipped, not rescaled
    grid = logger.triplet_array(original, recon)
    rows = 8 * (3 if dims == 3 else 1)
    assert grid.shape == (rows, 24) and grid.dtype == np.uint8
    assert (grid[:, :8] == 0).all() and (grid[:, 8:16] == 255).all() and (grid[:, 16:] == 255).all()
