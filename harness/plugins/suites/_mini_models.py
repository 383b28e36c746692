"""The six small generative models of the ``mini`` suite, fitted on real training crops.

Each family leaves a different trace, as real generators do:

- ``tconv``, ``nearest``, ``bilinear``, ``pixelshuffle``: autoencoders with one shared
  encoder (two stride-2 convolutions to a latent at 1/4 resolution) and a decoder that
  upsamples x2 twice by transposed convolution, nearest-neighbour + conv, bilinear + conv or
  sub-pixel convolution (the up-sampling operators of GANs and VAEs). The encoder and the
  four decoders are trained together, which costs little more than one autoencoder.
- ``vqvae``: a vector-quantised autoencoder (a 64-entry codebook with a straight-through
  gradient, VQ-VAE style) whose decoder uses non-overlapping 2x2 transposed convolutions.
- ``denoiser``: a full-resolution noise-conditioned denoiser (no up-sampling at all) that
  reconstructs a crop from a noised copy in a few deterministic (DDIM-style) steps.

Everything is fully convolutional: the models train on small random windows of the crops
(cheap) and reconstruct whole crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AE_DECODERS = ("tconv", "nearest", "bilinear", "pixelshuffle")
FAMILIES = AE_DECODERS + ("vqvae", "denoiser")


def _encoder(width: int, latent: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width // 2, 3, padding=1), nn.GELU(),
        nn.Conv2d(width // 2, width, 4, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(width, width, 4, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(width, latent, 1),
    )


def _up(kind: str, cin: int, cout: int) -> nn.Module:
    """x2 up-sampling from ``cin`` to ``cout`` channels by one family's operator."""
    if kind == "tconv":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    if kind == "tconv2x2":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    if kind == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1))
    if kind == "bilinear":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(cin, cout, 3, padding=1))
    if kind == "pixelshuffle":
        return nn.Sequential(nn.Conv2d(cin, cout * 4, 3, padding=1), nn.PixelShuffle(2))
    raise ValueError(f"unknown up-sampling family '{kind}'")


def _decoder(kind: str, width: int, latent: int) -> nn.Sequential:
    # The full-resolution stage is half as wide: it is where most of the compute goes.
    return nn.Sequential(
        nn.Conv2d(latent, width, 3, padding=1), nn.GELU(),
        _up(kind, width, width), nn.GELU(),
        _up(kind, width, width // 2), nn.GELU(),
        nn.Conv2d(width // 2, 3, 3, padding=1),
    )


class SharedEncoderAutoencoders(nn.Module):
    """One encoder, one decoder per up-sampling family; forward returns every reconstruction."""

    def __init__(self, width: int = 32, latent: int = 8):
        super().__init__()
        self.encoder = _encoder(width, latent)
        self.decoders = nn.ModuleDict({kind: _decoder(kind, width, latent) for kind in AE_DECODERS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        return {kind: dec(z) for kind, dec in self.decoders.items()}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return sum(F.mse_loss(out, x) for out in self(x).values())


class VQAutoencoder(nn.Module):
    def __init__(self, width: int = 32, latent: int = 8, codes: int = 64, beta: float = 0.25):
        super().__init__()
        self.encoder = _encoder(width, latent)
        self.codebook = nn.Embedding(codes, latent)
        nn.init.uniform_(self.codebook.weight, -1.0 / codes, 1.0 / codes)
        self.decoder = _decoder("tconv2x2", width, latent)
        self.beta = beta

    def quantise(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        index = torch.cdist(flat, self.codebook.weight).argmin(dim=1)
        return self.codebook(index).reshape(b, h, w, c).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        q = self.quantise(z)
        return self.decoder(z + (q - z).detach())

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        q = self.quantise(z)
        recon = self.decoder(z + (q - z).detach())
        return F.mse_loss(recon, x) + F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())


class Denoiser(nn.Module):
    """Predicts the clean crop from ``x + sigma * noise`` with sigma given as an extra channel."""

    def __init__(self, width: int = 24, sigma_max: float = 0.4):
        super().__init__()
        self.sigma_max = sigma_max
        self.net = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.GELU(),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma_map = sigma.view(-1, 1, 1, 1).expand(-1, 1, *noisy.shape[-2:])
        return noisy + self.net(torch.cat([noisy, sigma_map], dim=1))

    def loss(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sigma = torch.rand(x.shape[0], generator=generator) * self.sigma_max
        noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=generator)
        return F.mse_loss(self(noisy, sigma), x)

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator, sigmas=(0.3, 0.15, 0.05)) -> torch.Tensor:
        """Noise to ``sigmas[0]``, then step down deterministically (DDIM with eta = 0)."""
        noise = torch.randn(x.shape, generator=generator)
        current = x + sigmas[0] * noise
        levels = list(sigmas) + [0.0]
        for sigma, following in zip(levels[:-1], levels[1:]):
            clean = self(current, torch.full((x.shape[0],), sigma))
            current = clean + (following / sigma) * (current - clean)
        return current
