"""How many tokens K to keep for each training sample (paper A.3 and the official code).

Candidates are squares K = (base + direction * T)^2 of an offset T:
* ``exponential``: P(T = k) = (1 - e^-lambda) e^(-lambda k), k = 0..n-1 (paper Eq. 19; G: (16 - T)^2,
  R: (6 + T)^2);
* ``gaussian``: P(T = k) proportional to exp(-(k - mu)^2 / (2 sigma^2)) over k = -1..n-2 (paper Eq. 20;
  G+R: (12 + T)^2);
* ``official``: the release's candidate list and floored probabilities, walked deterministically by step
  (``rand = (step % 100) * 0.01``), as ``MergeVQEncoder.sampling_r_candidate`` does;
* ``fixed``: always ``base**2``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch

KINDS = ("fixed", "exponential", "gaussian", "official")


@dataclass
class MergeRatioSampler:
    kind: str = "gaussian"
    base: int = 12
    direction: int = 1
    num_candidates: int = 6
    lambd: float = 2.0
    mu: float = 0.0
    sigma: float = 0.5
    num_positions: int = 256

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"merge-ratio sampler kind={self.kind!r}; allowed: {KINDS}")
        if self.direction not in (1, -1):
            raise ValueError(f"direction={self.direction}; allowed: 1 or -1")
        if not 1 <= self.base**2 <= self.num_positions:
            raise ValueError(f"base={self.base}: base^2 must be in 1..{self.num_positions} (L)")

    def offsets(self) -> list[int]:
        if self.kind == "fixed":
            return [0]
        start = -1 if self.kind in ("gaussian", "official") else 0
        return list(range(start, start + self.num_candidates))

    def candidates(self) -> list[int]:
        """Kept-token counts K, clipped to 1..L."""
        return [min(max((self.base + self.direction * t) ** 2, 1), self.num_positions) for t in self.offsets()]

    def probabilities(self) -> list[float]:
        offsets = self.offsets()
        if self.kind == "fixed":
            weights = [1.0]
        elif self.kind == "exponential":
            weights = [(1 - math.exp(-self.lambd)) * math.exp(-self.lambd * k) for k in offsets]
        elif self.kind == "gaussian":
            weights = [math.exp(-((k - self.mu) ** 2) / (2 * self.sigma**2)) for k in offsets]
        else:  # official generate_prob_list: gaussian(mean 1, std 0.5) over the index, + 0.05 floor
            weights = [math.exp(-((i - 1) ** 2) / (2 * 0.5**2)) + 0.05 for i in range(len(offsets))]
        total = sum(weights)
        return [w / total for w in weights]

    def sample(self, batch: int, generator: torch.Generator | None = None, step: int = 0) -> torch.LongTensor:
        """K for each of ``batch`` samples (the official cycle gives the whole batch one K per step)."""
        candidates = self.candidates()
        if self.kind == "official":
            cumulative = [round(c, 5) for c in torch.tensor(self.probabilities()).cumsum(0).tolist()]
            index = min(bisect.bisect_left(cumulative, (step % 100) * 0.01), len(candidates) - 1)
            return torch.full((batch,), candidates[index], dtype=torch.long)
        probs = torch.tensor(self.probabilities())
        index = torch.multinomial(probs, batch, replacement=True, generator=generator)
        return torch.tensor(candidates, dtype=torch.long)[index]
