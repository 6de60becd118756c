"""PatchGAN discriminator and the GAN loss terms of MergeVQ's stage 1 (as in taming-transformers /
Open-MAGVIT2, which the official MergeVQ code reuses).

- :class:`NLayerDiscriminator`: pix2pix PatchGAN, ``n_layers=3``, ``ndf=64``, BatchNorm, LeakyReLU(0.2),
  kernel 4; conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0 (taming's ``weights_init``).
  A 256x256 input gives a [B, 1, 30, 30] map of patch logits, 32x32 gives [B, 1, 2, 2].
- :func:`hinge_d_loss`: ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``.
- :func:`hinge_gen_loss`: ``-mean(fake)``; :func:`non_saturating_gen_loss`: ``softplus(-mean_patch(fake))``
  averaged over the batch (the official default generator term).
- :class:`LeCamEMA`: LeCam regularisation (Tseng et al., CVPR 2021) with EMAs of the mean real / fake
  logits kept as buffers, so they are saved and restored with the module's state dict.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..image_utils import check_images


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {logits.dtype}")
    if logits.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(logits.shape)})")


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss ``0.5 * (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake)))``."""
    _check_logits("logits_real", logits_real)
    _check_logits("logits_fake", logits_fake)
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_gen_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss ``-mean(logits_fake)``."""
    _check_logits("logits_fake", logits_fake)
    return -logits_fake.mean()


def non_saturating_gen_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: per sample, the patch logits are averaged, then
    ``BCE_with_logits(mean, 1) = softplus(-mean)``; averaged over the batch (official ``non_saturate_gen_loss``)."""
    _check_logits("logits_fake", logits_fake)
    per_sample = logits_fake.reshape(logits_fake.shape[0], -1).mean(dim=1)
    return F.softplus(-per_sample).mean()


GEN_LOSSES = {"hinge": hinge_gen_loss, "non_saturate": non_saturating_gen_loss}


class LeCamEMA(nn.Module):
    """LeCam regulariser with EMAs of the mean real and fake logits (decay 0.999, starting at ``init``).

    ``forward(logits_real, logits_fake)`` first updates the EMAs with the batch means (in training mode; as in
    the official code, the update precedes the penalty), then returns
    ``mean(relu(logits_real - ema_fake)^2) + mean(relu(ema_real - logits_fake)^2)``. The EMAs are buffers
    (``ema_real``, ``ema_fake``) and are not differentiated through. Under data parallelism each process keeps
    its own EMA from its local logits, as the official code does.
    """

    def __init__(self, decay: float = 0.999, init: float = 0.0):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam decay={decay!r}; allowed: 0 <= decay < 1")
        self.decay = float(decay)
        self.register_buffer("ema_real", torch.tensor(float(init)))
        self.register_buffer("ema_fake", torch.tensor(float(init)))

    @torch.no_grad()
    def update(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> None:
        _check_logits("logits_real", logits_real)
        _check_logits("logits_fake", logits_fake)
        d = self.decay
        self.ema_real.mul_(d).add_(logits_real.detach().float().mean().to(self.ema_real.dtype), alpha=1 - d)
        self.ema_fake.mul_(d).add_(logits_fake.detach().float().mean().to(self.ema_fake.dtype), alpha=1 - d)

    def penalty(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """The LeCam term with the current EMAs (no update)."""
        ema_real = self.ema_real.to(logits_real.dtype)
        ema_fake = self.ema_fake.to(logits_fake.dtype)
        return F.relu(logits_real - ema_fake).pow(2).mean() + F.relu(ema_real - logits_fake).pow(2).mean()

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(logits_real, logits_fake)
        return self.penalty(logits_real, logits_fake)

    def extra_repr(self) -> str:
        return f"decay={self.decay}"


def weights_init(module: nn.Module) -> None:
    """taming's init: conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NLayerDiscriminator(nn.Module):
    """pix2pix PatchGAN discriminator (taming-transformers ``NLayerDiscriminator`` with BatchNorm).

    Layout (n_layers=3, ndf=64): conv(3->64, s2) LReLU; conv(64->128, s2) BN LReLU; conv(128->256, s2) BN LReLU;
    conv(256->512, s1) BN LReLU; conv(512->1, s1). Kernel 4, padding 1; convs followed by BatchNorm have no
    bias. Module indices match taming's ``main.N`` so its checkpoints load directly. Input [B, C, H, W] with
    H, W >= 3 * 2**n_layers (so that the patch map is not empty); output [B, 1, h, w] patch logits.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        for name, value in (("input_nc", input_nc), ("ndf", ndf), ("n_layers", n_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
        self.input_nc = input_nc
        self.n_layers = n_layers
        kw, padw = 4, 1
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    @property
    def min_size(self) -> int:
        # n_layers stride-2 convs give floor(H / 2**n); the two stride-1 kernel-4 convs remove 2 more.
        return 3 * 2**self.n_layers

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        what = f"this discriminator (n_layers={self.n_layers})"
        check_images("pixel_values", pixel_values, channels=self.input_nc, min_size=self.min_size, what=what)
        return self.main(pixel_values)


__all__ = [
    "GEN_LOSSES",
    "LeCamEMA",
    "NLayerDiscriminator",
    "hinge_d_loss",
    "hinge_gen_loss",
    "non_saturating_gen_loss",
    "weights_init",
]
