"""MergeVQ stage-1 (tokenizer) losses, following the official ``VQLPIPSWithDiscriminator`` and the paper.

Generator step (``MergeVQLoss.generator_loss``)::

    nll   = reconstruction_weight * L1(x, x_rec) + perceptual_weight * LPIPS(x, x_rec)
    adv   = d_weight * disc_factor(step) * G(D(x_rec))       G: non-saturating (official default) or hinge -mean
    total = nll + adv + commitment_weight * commitment + entropy_weight(step) * entropy
            + alignment_weight * KL(softmax(t/4) || softmax(s/4)) * 16 + source_weight * source_loss

``commitment_weight`` and ``entropy_weight`` belong to the tokenizer (``MergeVQConfig``, saved with the model and
converted from the official loss config): ``MergeVQModel.forward`` weights its own ``loss`` with them and
``MergeVQLoss(..., tokenizer_config=model.config)`` reads the same two numbers, so one place decides them.
``entropy_enlarge_ratio`` (here) only scales the tokenizer's entropy weight early in training.

``d_weight`` is ``gen_loss_weight`` (0.1, official config), or when ``gen_loss_weight`` is ``None`` taming's
adaptive weight ``||grad nll|| / (||grad G|| + 1e-4)`` on the decoder's last layer, clamped to [0, 1e4] and
times ``disc_weight`` (0.8). ``disc_factor(step)`` is 0 before ``disc_start``.

Discriminator step (``MergeVQLoss.discriminator_loss``)::

    d_loss = disc_factor(step) * (hinge(D(x), D(x_rec)) + lecam_weight * LeCam(D(x), D(x_rec)))

Official weights (configs/gpu_s1 of the MergeVQ release): L1 1.0, LPIPS 1.0, ``gen_loss_weight`` 0.1,
``disc_weight`` 0.8 (only used by the adaptive weight), LeCam 0.01, entropy (``codebook_weight``) 0.1 and
commitment 0.25 (both in ``MergeVQConfig``), alignment (``cls_loss_weight``) 1.0 for G+R / R and 0.1 for G,
``disc_start`` 0. The source-recovery weight (0.5 / 1.0) is the paper's; the official release trains no
source recovery.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..image_utils import check_images
from ..models.source_recovery.modeling_source_recovery import source_recovery_loss
from ..models.tokenizer import MergeVQConfig
from .discriminator import GEN_LOSSES, LeCamEMA, NLayerDiscriminator, hinge_d_loss
from .lpips import LPIPS
from .teacher import FrozenTeacher, load_teacher

TOKENIZER_WEIGHTS = ("commitment_weight", "entropy_weight")  # owned by MergeVQConfig
_WEIGHT_FIELDS = (
    "reconstruction_weight",
    "perceptual_weight",
    "disc_weight",
    "disc_factor",
    "lecam_weight",
    "entropy_enlarge_ratio",
    "alignment_weight",
    "source_weight",
)


@dataclass
class MergeVQLossConfig:
    """Weights and switches of the stage-1 loss (defaults: the official G+R configuration)."""

    reconstruction_weight: float = 1.0  # L1
    perceptual_weight: float = 1.0  # LPIPS-VGG16
    gen_loss_weight: float | None = 0.1  # fixed weight of the generator GAN term; None -> adaptive weight
    disc_weight: float = 0.8  # scale of the adaptive weight (only when gen_loss_weight is None)
    disc_factor: float = 1.0  # multiplies both GAN terms from disc_start on
    disc_start: int = 0  # step from which the GAN terms are on (before it they are exactly 0)
    gen_adv_loss: str = "non_saturate"  # "non_saturate" (official default) or "hinge" (-mean(logits_fake))
    lecam_weight: float = 0.01
    lecam_decay: float = 0.999
    # the tokenizer's entropy weight (MergeVQConfig.entropy_weight) times (1 + r * max(0, 1 - step / steps)):
    # the official codebook_enlarge_ratio
    entropy_enlarge_ratio: float = 0.0
    entropy_enlarge_steps: int = 2000
    alignment_weight: float = 1.0  # 1.0 for G+R and R, 0.1 for G
    alignment_temperature: float = 4.0
    source_weight: float = 0.5  # paper: 0.5 / 1.0; set 0 when no source recovery is trained
    source_loss_type: str = "bce"  # see source_recovery_loss
    disc_in_channels: int = 3
    disc_ndf: int = 64
    disc_num_layers: int = 3
    lpips_weights: str | None = None  # explicit LPIPS safetensors path (else $MERGEVQ_LPIPS_WEIGHTS / cache)

    def __post_init__(self):
        for name in _WEIGHT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r}; allowed: a finite number >= 0")
        gw = self.gen_loss_weight
        if gw is not None and (
            isinstance(gw, bool) or not isinstance(gw, (int, float)) or not math.isfinite(gw) or gw < 0
        ):
            raise ValueError(f"gen_loss_weight={gw!r}; allowed: a finite number >= 0, or None for the adaptive weight")
        for name in ("disc_start", "entropy_enlarge_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 0")
        if self.entropy_enlarge_ratio > 0 and self.entropy_enlarge_steps < 1:
            raise ValueError(f"entropy_enlarge_steps={self.entropy_enlarge_steps!r}; must be >= 1 when enlarging")
        if self.gen_adv_loss not in GEN_LOSSES:
            raise ValueError(f"gen_adv_loss={self.gen_adv_loss!r}; allowed: {tuple(GEN_LOSSES)}")
        if self.source_loss_type not in ("bce", "ce"):
            raise ValueError(f"source_loss_type={self.source_loss_type!r}; allowed: ('bce', 'ce')")
        if not (isinstance(self.alignment_temperature, (int, float)) and self.alignment_temperature > 0):
            raise ValueError(f"alignment_temperature={self.alignment_temperature!r}; allowed: a number > 0")
        if not 0.0 <= self.lecam_decay < 1.0:
            raise ValueError(f"lecam_decay={self.lecam_decay!r}; allowed: 0 <= decay < 1")

    @property
    def adaptive(self) -> bool:
        """True when the generator GAN weight is taming's adaptive weight (``gen_loss_weight is None``)."""
        return self.gen_loss_weight is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MergeVQLossConfig:
        known = {f.name for f in fields(cls)}
        owned = sorted(set(values) & set(TOKENIZER_WEIGHTS))
        if owned:
            raise ValueError(
                f"{owned} belong to the tokenizer config (MergeVQConfig, e.g. train_tokenizer.py --config-overrides), "
                "not to MergeVQLossConfig: the tokenizer's forward and MergeVQLoss both read them there"
            )
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MergeVQLossConfig fields {unknown}; allowed: {sorted(known)}")
        return cls(**values)


# ---------------------------------------------------------------------------------------------- functions
def alignment_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Distillation loss of Eq. 12 (official ``distill_cls_loss``):
    ``KL(softmax(teacher / T) || softmax(student / T)) * T**2`` with ``reduction='batchmean'``.
    ``student`` [B, D] gets the gradient; ``teacher`` [B, D] is detached. Computed in float32."""
    for name, value in (("student", student), ("teacher", teacher)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} features must be a torch.Tensor, got {type(value).__name__}")
        if value.ndim != 2:
            raise ValueError(f"{name} features must be [B, D], got shape {tuple(value.shape)}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"student features {tuple(student.shape)} and teacher features {tuple(teacher.shape)} differ; the "
            "tokenizer's dist_head_dim must equal the teacher's hidden size"
        )
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}; allowed: > 0")
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    p_teacher = F.softmax(teacher.detach().float() / temperature, dim=-1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * (temperature**2)


def calculate_adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float = 0.8
) -> torch.Tensor:
    """taming's adaptive GAN weight: ``clamp(||d nll/d W|| / (||d g/d W|| + 1e-4), 0, 1e4) * disc_weight``
    with ``W = last_layer`` (the decoder's last conv weight), detached."""
    if not isinstance(last_layer, torch.Tensor) or not last_layer.requires_grad:
        raise ValueError("last_layer must be a tensor that requires grad (e.g. model.decoder.conv_out.weight)")
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    return torch.clamp(d_weight, 0.0, 1e4).detach() * disc_weight


def adopt_weight(weight: float, step: int, threshold: int = 0, value: float = 0.0) -> float:
    """``value`` before ``threshold`` steps, ``weight`` from then on."""
    return value if step < threshold else weight


# ---------------------------------------------------------------------------------------------- module
class MergeVQLoss(nn.Module):
    """Stage-1 loss: holds the LPIPS network (frozen), the PatchGAN discriminator and the LeCam EMAs.

    Optimise ``loss.discriminator.parameters()`` with the discriminator optimiser; LPIPS has no trainable
    parameters. The teacher (:func:`load_teacher`) is kept outside this module: pass its features.
    ``perceptual`` defaults to ``LPIPS.from_pretrained(config.lpips_weights)`` when ``perceptual_weight > 0``.
    ``tokenizer_config`` (the trained model's ``MergeVQConfig``; default ``MergeVQConfig()``) gives the commitment
    and entropy weights, the same ones ``MergeVQModel.forward`` uses for its own ``loss``.
    """

    def __init__(
        self,
        config: MergeVQLossConfig | None = None,
        perceptual: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        tokenizer_config: MergeVQConfig | None = None,
    ):
        super().__init__()
        if config is None:
            config = MergeVQLossConfig()
        if not isinstance(config, MergeVQLossConfig):
            raise TypeError(f"config must be a MergeVQLossConfig, got {type(config).__name__}")
        if tokenizer_config is None:
            tokenizer_config = MergeVQConfig()
        if not isinstance(tokenizer_config, MergeVQConfig):
            raise TypeError(f"tokenizer_config must be a MergeVQConfig, got {type(tokenizer_config).__name__}")
        self.config = config
        self.commitment_weight = float(tokenizer_config.commitment_weight)
        self.entropy_weight = float(tokenizer_config.entropy_weight)
        if perceptual is None and config.perceptual_weight > 0:
            perceptual = LPIPS.from_pretrained(config.lpips_weights)
        self.perceptual = perceptual
        if discriminator is None:
            discriminator = NLayerDiscriminator(config.disc_in_channels, config.disc_ndf, config.disc_num_layers)
        self.discriminator = discriminator
        self.lecam = LeCamEMA(decay=config.lecam_decay)

    # ------------------------------------------------------------------ schedules
    def disc_factor_at(self, step: int) -> float:
        self._check_step(step)
        return adopt_weight(self.config.disc_factor, step, threshold=self.config.disc_start)

    def entropy_weight_at(self, step: int) -> float:
        self._check_step(step)
        cfg = self.config
        weight = self.entropy_weight
        if cfg.entropy_enlarge_ratio > 0:
            weight = weight * (1.0 + cfg.entropy_enlarge_ratio * max(0.0, 1.0 - step / cfg.entropy_enlarge_steps))
        return weight

    @staticmethod
    def _check_step(step: int) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step={step!r}; allowed: an integer >= 0")

    @staticmethod
    def _check_images(pixel_values: torch.Tensor, reconstruction: torch.Tensor) -> None:
        check_images("pixel_values", pixel_values, channels=None, floating=False)
        check_images("reconstruction", reconstruction, channels=None, floating=False)
        if pixel_values.shape != reconstruction.shape:
            raise ValueError(
                f"pixel_values {tuple(pixel_values.shape)} and reconstruction {tuple(reconstruction.shape)} differ"
            )

    # ------------------------------------------------------------------ generator
    def generator_loss(
        self,
        model_output,
        pixel_values: torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
        source_logits: torch.Tensor | None = None,
        source_loss: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total generator-side loss and detached per-term logs.

        model_output: a ``MergeVQModelOutput`` (``reconstruction``, ``commitment_loss``, ``entropy_loss``,
            ``cls_features``, ``source``). pixel_values: the target images [B, 3, H, W] in [-1, 1].
        last_layer: the decoder's last weight (``model.decoder.conv_out.weight``); needed for the adaptive weight.
        teacher_features: the frozen teacher's pooled CLS [B, D] (needed when ``alignment_weight > 0``).
        source_logits [B, L, K] (scored against ``model_output.source`` with ``source_mask``) or a ready
            ``source_loss`` (one is needed when ``source_weight > 0``).
        """
        cfg = self.config
        self._check_step(step)
        if isinstance(model_output, (tuple, list)):
            raise TypeError("model_output must be a MergeVQModelOutput (call the model with return_dict=True)")
        reconstruction = getattr(model_output, "reconstruction", None)
        if reconstruction is None:
            raise TypeError(f"model_output ({type(model_output).__name__}) has no reconstruction")
        self._check_images(pixel_values, reconstruction)
        zero = reconstruction.new_zeros(())
        logs: dict[str, torch.Tensor] = {}

        rec_loss = (pixel_values - reconstruction).abs().mean()
        p_loss = zero
        if cfg.perceptual_weight > 0:
            if self.perceptual is None:
                raise ValueError("perceptual_weight > 0 but this loss has no perceptual network")
            p_loss = self.perceptual(pixel_values, reconstruction).mean()
        nll_loss = cfg.reconstruction_weight * rec_loss + cfg.perceptual_weight * p_loss

        disc_factor = self.disc_factor_at(step)
        g_loss, d_weight = zero, zero
        if disc_factor > 0 and (cfg.adaptive or cfg.gen_loss_weight > 0):
            logits_fake = self.discriminator(reconstruction)
            g_loss = GEN_LOSSES[cfg.gen_adv_loss](logits_fake)
            if not cfg.adaptive:
                d_weight = torch.tensor(float(cfg.gen_loss_weight), device=g_loss.device)
            elif torch.is_grad_enabled() and nll_loss.requires_grad and g_loss.requires_grad:
                if last_layer is None:
                    raise ValueError("the adaptive GAN weight (gen_loss_weight=None) needs last_layer=")
                d_weight = calculate_adaptive_weight(nll_loss, g_loss, last_layer, cfg.disc_weight)
            # else: evaluation without gradients, the adaptive weight is 0 (as in taming)
        adv_loss = d_weight * disc_factor * g_loss

        commitment = self._term(model_output, "commitment_loss", self.commitment_weight, zero)
        entropy = self._term(model_output, "entropy_loss", self.entropy_weight, zero)
        total = nll_loss + adv_loss + self.commitment_weight * commitment + self.entropy_weight_at(step) * entropy

        align = zero
        if cfg.alignment_weight > 0:
            student = getattr(model_output, "cls_features", None)
            if teacher_features is None or student is None:
                missing = "teacher_features" if teacher_features is None else "model_output.cls_features"
                raise ValueError(
                    f"alignment_weight={cfg.alignment_weight} but {missing} is None (pass the teacher's pooled CLS "
                    "and use a tokenizer with a dist head, or set alignment_weight=0)"
                )
            align = alignment_loss(student, teacher_features, cfg.alignment_temperature)
            total = total + cfg.alignment_weight * align

        src = zero
        if cfg.source_weight > 0:
            if source_loss is not None:
                src = source_loss
            elif source_logits is not None:
                source = getattr(model_output, "source", None)
                if source is None:
                    raise ValueError("source_logits given but model_output.source is None")
                src = source_recovery_loss(source_logits, source, source_mask, loss_type=cfg.source_loss_type)
            else:
                raise ValueError(
                    f"source_weight={cfg.source_weight} but neither source_logits nor source_loss was given "
                    "(set source_weight=0 to train without source recovery)"
                )
            total = total + cfg.source_weight * src

        logs["total"] = total
        logs["nll"] = nll_loss
        logs["reconstruction"] = rec_loss
        logs["perceptual"] = p_loss
        logs["g_loss"] = g_loss
        logs["d_weight"] = d_weight
        logs["disc_factor"] = torch.tensor(float(disc_factor))
        logs["adversarial"] = adv_loss
        logs["commitment"] = commitment
        logs["entropy"] = entropy
        for name in ("per_sample_entropy", "codebook_entropy"):
            value = getattr(model_output, name, None)
            if value is not None:
                logs[name] = value
        logs["alignment"] = align
        logs["source"] = src
        return total, {k: torch.as_tensor(v).detach() for k, v in logs.items()}

    @staticmethod
    def _term(model_output, name: str, weight: float, zero: torch.Tensor) -> torch.Tensor:
        value = getattr(model_output, name, None)
        if value is None:
            if weight > 0:
                raise ValueError(f"model_output.{name} is None but its weight is {weight}")
            return zero
        return value

    # ------------------------------------------------------------------ discriminator
    def discriminator_loss(
        self, pixel_values: torch.Tensor, reconstruction: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator loss on real ``pixel_values`` and (detached) ``reconstruction``, and detached logs.

        As in the official code the discriminator runs (and, in training mode, the LeCam EMAs update) at every
        step; before ``disc_start`` the loss is multiplied by 0.
        """
        cfg = self.config
        self._check_step(step)
        self._check_images(pixel_values, reconstruction)
        logits_real = self.discriminator(pixel_values.detach())
        logits_fake = self.discriminator(reconstruction.detach())
        disc_factor = self.disc_factor_at(step)
        d_hinge = hinge_d_loss(logits_real, logits_fake)
        lecam = logits_real.new_zeros(())
        if cfg.lecam_weight > 0:
            lecam = self.lecam(logits_real, logits_fake)
        d_loss = disc_factor * (d_hinge + cfg.lecam_weight * lecam)
        logs = {
            "disc_loss": d_loss,
            "hinge": d_hinge,
            "lecam": lecam,
            "logits_real": logits_real.mean(),
            "logits_fake": logits_fake.mean(),
            "disc_factor": torch.tensor(float(disc_factor)),
            "lecam_ema_real": self.lecam.ema_real,
            "lecam_ema_fake": self.lecam.ema_fake,
        }
        return d_loss, {k: v.detach().clone() for k, v in logs.items()}


__all__ = [
    "FrozenTeacher",
    "MergeVQLoss",
    "MergeVQLossConfig",
    "adopt_weight",
    "alignment_loss",
    "calculate_adaptive_weight",
    "load_teacher",
]
