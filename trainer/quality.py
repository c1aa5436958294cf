"""Reconstruction quality as MONAI measures it: SSIM, PSNR and, where the image allows, MS-SSIM.

The same definitions as ``monai.metrics.SSIMMetric``, ``PSNRMetric`` and
``MultiScaleSSIMMetric`` with their defaults (Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03,
five MS-SSIM scales; data range 1, the images' [0, 1]), one value per image, averaged over the
validation set. MONAI's classes build their window on the host and copy it to the device on
every call, which makes a CUDA validation wait for the host at each batch; here the window is
built once, the Gaussian is applied one axis at a time (the same sums, fewer products), and the
per-image values are summed on the device: they reach the host with validation's other values,
once per epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contract import metrics as m

WIN_SIZE = m.SSIM_WINDOW
SIGMA = 1.5
K1, K2 = 0.01, 0.03
# MONAI's weights of the metrics.MS_SSIM_SCALES scales, finest first.
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class Quality:
    """Per-batch sums of each image's PSNR, SSIM and MS-SSIM (those ``keys`` the image size
    allows: ``metrics.quality_keys``), kept on the device."""

    def __init__(self, spatial_dims: int, image_size: int, device: torch.device) -> None:
        self.spatial_dims = spatial_dims
        self.keys = m.quality_keys(image_size)
        dist = torch.arange(WIN_SIZE, dtype=torch.float32) - (WIN_SIZE - 1) / 2
        gauss = torch.exp(-((dist / SIGMA) ** 2) / 2)
        self.window = (gauss / gauss.sum()).to(device)
        self.ms_weights = torch.tensor(MS_WEIGHTS).to(device)

    def zeros(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(len(self.keys), device=device)

    def sums(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of each key's per-image value, a tensor of ``len(keys)``; in
        fp32 whatever the autocast around (a bf16 SSIM loses its small differences)."""
        with torch.autocast(x.device.type, enabled=False):
            x, recon = x.float(), recon.float()
            mse = (x - recon).pow(2).flatten(1).mean(1)
            values = [-10 * torch.log10(mse)]
            if m.VAL_SSIM in self.keys:
                ssim, cs = self._ssim_cs(recon, x)
                values.append(ssim.flatten(1).mean(1))
            if m.VAL_MS_SSIM in self.keys:
                values.append(self._ms_ssim(recon, x, cs))
            return torch.stack([v.sum() for v in values])

    def _blur(self, t: torch.Tensor) -> torch.Tensor:
        """The Gaussian window over every spatial axis ('valid' borders, as MONAI's conv)."""
        groups = t.shape[1]
        conv = getattr(F, f"conv{self.spatial_dims}d")
        for axis in range(self.spatial_dims):
            shape = [1] * self.spatial_dims
            shape[axis] = WIN_SIZE
            t = conv(t, self.window.view(1, 1, *shape).expand(groups, 1, *shape), groups=groups)
        return t

    def _ssim_cs(self, y_pred: torch.Tensor, y: torch.Tensor):
        """MONAI's ``compute_ssim_and_cs``: the SSIM and contrast-sensitivity maps."""
        c = y.shape[1]
        blurred = self._blur(torch.cat([y_pred, y, y_pred * y_pred, y * y, y_pred * y], dim=1))
        mu_x, mu_y, mu_xx, mu_yy, mu_xy = blurred.split(c, dim=1)
        sigma_x, sigma_y = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y
        sigma_xy = mu_xy - mu_x * mu_y
        c1, c2 = K1**2, K2**2
        cs = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
        return ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs, cs

    def _ms_ssim(self, y_pred: torch.Tensor, y: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
        """MONAI's ``compute_ms_ssim``: contrast sensitivity at each scale but the last, SSIM at
        the last, each clipped at 0, weighted geometric mean; per image."""
        pool = getattr(F, f"avg_pool{self.spatial_dims}d")
        scales = [torch.relu(cs.flatten(1).mean(1))]
        for _ in range(len(MS_WEIGHTS) - 1):
            y_pred, y = pool(y_pred, kernel_size=2), pool(y, kernel_size=2)
            ssim, cs = self._ssim_cs(y_pred, y)
            scales.append(torch.relu(cs.flatten(1).mean(1)))
        scales[-1] = torch.relu(ssim.flatten(1).mean(1))
        return torch.prod(torch.stack(scales) ** self.ms_weights.view(-1, 1), dim=0)
