"""The VAE (MONAI's AutoencoderKL) and its losses, built from the Config.

Train and validation losses go through the same ``losses`` function, so their gap means
something when a run is judged over- or underfitting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import AutoencoderKL, PatchDiscriminator

from contract.config import Config
from contract.errors import UserError

LPIPS_NETWORKS = ("alex", "vgg", "squeeze")


def build_model(cfg: Config) -> AutoencoderKL:
    return AutoencoderKL(
        spatial_dims=cfg.spatial_dims,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        channels=cfg.channels,
        # MONAI's defaults have 4 entries: derive both from len(channels).
        num_res_blocks=cfg.res_blocks_per_level,
        attention_levels=cfg.attention_per_level,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        with_encoder_nonlocal_attn=cfg.nonlocal_attn,
        with_decoder_nonlocal_attn=cfg.nonlocal_attn,
    )


def forward(
    model: torch.nn.Module, x: torch.Tensor, sample: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstruction, z_mu, z_sigma); ``sample=False`` decodes z_mu (deterministic validation)."""
    if sample:
        return model(x)
    core = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    z_mu, z_sigma = core.encode(x)
    return core.decode(z_mu), z_mu, z_sigma


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """MONAI recipe: 0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1) over non-batch dims, batch mean."""
    z_mu, z_sigma = z_mu.float(), z_sigma.float()
    per_sample = 0.5 * torch.sum(
        z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1,
        dim=list(range(1, z_mu.dim())),
    )
    return per_sample.mean()


def recon_loss(x: torch.Tensor, recon: torch.Tensor, cfg: Config) -> torch.Tensor:
    """The reconstruction term (``recon_loss``: L1 or L2), mean over the batch and pixels."""
    recon, x = recon.float(), x.float()
    return F.l1_loss(recon, x) if cfg.recon_loss == "l1" else F.mse_loss(recon, x)


def losses(
    x: torch.Tensor,
    recon: torch.Tensor,
    z_mu: torch.Tensor,
    z_sigma: torch.Tensor,
    cfg: Config,
    perceptual: torch.nn.Module | None,
) -> dict[str, torch.Tensor]:
    """Every term as a 0-d tensor (still on the device: no sync here), and their weighted sum."""
    recon, x = recon.float(), x.float()
    rec = recon_loss(x, recon, cfg)
    kl = kl_loss(z_mu, z_sigma)
    total = rec + cfg.kl_weight * kl
    out = {"recon": rec, "kl": kl}
    if perceptual is not None:
        out["perceptual"] = perceptual(recon, x)
        total = total + cfg.perceptual_weight * out["perceptual"]
    out["total"] = total
    return out


# --- adversarial term: MONAI's recipe, optional ---------------------------------------------------
class AdversarialLoss(PatchAdversarialLoss):
    """MONAI's least-squares patch loss, with its 0/1 targets made on the device: MONAI's own
    copy a host scalar to the GPU on every call, which makes a CUDA step wait for the host."""

    def __init__(self) -> None:
        super().__init__(criterion="least_squares")

    def get_target_tensor(self, input: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        return torch.full_like(input, self.real_label if target_is_real else self.fake_label)


# On the discriminator's last (patch) output, as in MONAI's AutoencoderKL tutorials.
ADVERSARIAL = AdversarialLoss()


def build_discriminator(cfg: Config) -> PatchDiscriminator | None:
    if cfg.adv_weight <= 0:
        return None
    return PatchDiscriminator(
        spatial_dims=cfg.spatial_dims,
        channels=cfg.disc_channels,
        in_channels=cfg.in_channels,
        num_layers_d=cfg.disc_layers,
    )


def generator_loss(disc: torch.nn.Module, recon: torch.Tensor) -> torch.Tensor:
    """How far the discriminator is from taking the reconstruction for real."""
    logits = disc(recon.contiguous().float())[-1]
    return ADVERSARIAL(logits, target_is_real=True, for_discriminator=False)


def discriminator_loss(disc: torch.nn.Module, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean of its losses on the reconstruction (fake) and the image (real); no gradient reaches
    the VAE."""
    fake = ADVERSARIAL(
        disc(recon.detach().contiguous().float())[-1], target_is_real=False, for_discriminator=True
    )
    real = ADVERSARIAL(
        disc(x.detach().contiguous().float())[-1], target_is_real=True, for_discriminator=True
    )
    return 0.5 * (fake + real)


# --- perceptual loss: optional, never downloads ---------------------------------------------------
@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """Make any torch.hub download raise, so missing weights fail at once instead of fetching."""
    import torch.hub

    def refuse(url: str, *args, **kwargs):
        raise _MissingWeights(url)

    saved = torch.hub.download_url_to_file
    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = saved


class _MissingWeights(Exception):
    pass


def build_perceptual(cfg: Config) -> torch.nn.Module | None:
    if cfg.perceptual_weight <= 0:
        return None
    from monai.losses import PerceptualLoss

    net = cfg.perceptual_network
    hub = Path(os.environ.get("TORCH_HOME", "~/.cache/torch")).expanduser() / "hub"
    how = (
        "set perceptual_weights_path to a local weights file"
        if net == "resnet50"
        else f"pre-fill the torch hub cache ({hub}) with the {net} weights"
    )
    if net in LPIPS_NETWORKS and importlib_missing("lpips"):
        raise UserError(
            f"perceptual_network={net!r} needs lpips: pip install 'vae-sweeps[perceptual]', "
            f"then {how}, or set perceptual_weight=0"
        )
    if cfg.perceptual_weights_path and not Path(cfg.perceptual_weights_path).is_file():
        raise UserError(f"perceptual_weights_path={cfg.perceptual_weights_path!r}: file not found")
    medicalnet = net.startswith("medicalnet")
    try:
        with _no_downloads():
            loss = PerceptualLoss(
                spatial_dims=cfg.spatial_dims,
                network_type=net,
                is_fake_3d=not medicalnet,
                pretrained=True,
                pretrained_path=cfg.perceptual_weights_path,
                channel_wise=False,
            )
    except (_MissingWeights, OSError, ImportError, RuntimeError) as exc:
        raise UserError(
            f"perceptual_network={net!r}: weights not available offline "
            f"({type(exc).__name__}); {how}, or set perceptual_weight=0"
        ) from None
    loss.requires_grad_(False)
    return loss.eval()


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
