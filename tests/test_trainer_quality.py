"""SSIM, PSNR and MS-SSIM of the trainer (trainer/quality.py) against monai.metrics itself."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, SSIMMetric

from contract import metrics as m
from trainer.quality import MS_WEIGHTS, Quality


def pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image batch in [0, 1] and a noisy, blurred 'reconstruction' of it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    recon = (0.7 * x + 0.3 * torch.rand(shape, generator=g)).clamp(0, 1)
    return x, recon


@pytest.mark.parametrize(
    ("spatial_dims", "shape"),
    [(2, (5, 1, 32, 32)), (2, (3, 3, 24, 40)), (3, (2, 1, 16, 16, 16))],
)
def test_ssim_and_psnr_are_monais(spatial_dims: int, shape: tuple[int, ...]) -> None:
    x, recon = pair(shape, seed=spatial_dims)
    quality = Quality(spatial_dims, image_size=shape[-1], device=torch.device("cpu"))
    assert quality.keys == (m.VAL_PSNR, m.VAL_SSIM)
    psnr, ssim = (quality.sums(x, recon) / len(x)).tolist()
    expected_ssim = SSIMMetric(spatial_dims=spatial_dims, data_range=1.0)(recon, x).mean().item()
    expected_psnr = PSNRMetric(max_val=1.0)(recon, x).mean().item()
    assert ssim == pytest.approx(expected_ssim, rel=1e-5)
    assert psnr == pytest.approx(expected_psnr, rel=1e-5)
    assert (quality.sums(x, x) / len(x))[1].item() == pytest.approx(1.0, rel=1e-6)


def test_each_score_where_the_image_size_allows_it() -> None:
    assert len(MS_WEIGHTS) == m.MS_SSIM_SCALES
    assert m.quality_keys(10) == (m.VAL_PSNR,)  # smaller than SSIM's window
    assert m.quality_keys(11) == m.quality_keys(160) == (m.VAL_PSNR, m.VAL_SSIM)
    assert m.quality_keys(176) == (m.VAL_PSNR, m.VAL_SSIM, m.VAL_MS_SSIM)
    x, recon = pair((2, 1, 8, 8), seed=6)
    (psnr,) = (Quality(2, 8, torch.device("cpu")).sums(x, recon) / len(x)).tolist()
    assert psnr == pytest.approx(PSNRMetric(max_val=1.0)(recon, x).mean().item(), rel=1e-5)


def test_ms_ssim_is_monais_where_the_image_allows_it() -> None:
    x, recon = pair((2, 1, 176, 176), seed=3)
    quality = Quality(2, image_size=176, device=torch.device("cpu"))
    assert quality.keys == (m.VAL_PSNR, m.VAL_SSIM, m.VAL_MS_SSIM)
    ms = (quality.sums(x, recon) / len(x))[2].item()
    expected = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0)(recon, x).mean().item()
    # The fifth scale is 11x11: its variances subtract near-equal fp32 sums, so MONAI's full
    # window and this one axis at a time differ by ~1e-5 there (both are fp32 roundings).
    assert ms == pytest.approx(expected, rel=5e-5)
    with pytest.raises(ValueError, match="larger than"):  # MONAI's own rule at 160
        MultiScaleSSIMMetric(spatial_dims=2)(*pair((1, 1, 160, 160), seed=4))


def test_scores_are_fp32_under_bf16_autocast() -> None:
    x, recon = pair((4, 1, 32, 32), seed=5)
    quality = Quality(2, image_size=32, device=torch.device("cpu"))
    plain = quality.sums(x, recon)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = quality.sums(x, recon)
    assert inside.dtype == torch.float32
    assert torch.allclose(inside, plain)
