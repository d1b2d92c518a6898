"""How exactly two systems must agree, from what each declares it does to vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vecmigrate.connectors.base import Capabilities
from vecmigrate.spec import Metric, VectorField


@dataclass(frozen=True)
class TolerancePolicy:
    """Vectors are equal when they agree under this policy; metadata must match exactly."""

    normalize: bool = False  # compare unit vectors (a side stores cosine vectors normalised)
    max_ulp: int = 0  # float32 units in the last place allowed per component
    atol: float = 0.0  # absolute tolerance after normalisation / float16 rounding
    reason: str = "bit-exact float32"

    @staticmethod
    def float64_ulps(source: Capabilities, target: Capabilities) -> int:
        """ulps float64 metadata may drift between the two systems (0: must be exact)."""
        return 0 if source.exact_float64 and target.exact_float64 else 4

    @classmethod
    def between(
        cls, source: Capabilities, target: Capabilities, vf: VectorField
    ) -> TolerancePolicy:
        normalize = vf.metric is Metric.COSINE and (
            source.normalizes_cosine or target.normalizes_cosine
        )
        if vf.dtype == "float16":
            return cls(normalize=normalize, atol=2e-3, reason="float16 storage")
        if normalize:
            return cls(normalize=True, atol=1e-6, reason="cosine vectors stored normalised")
        if not (source.exact_float32 and target.exact_float32):
            ulps = max(source.max_ulp, target.max_ulp, 1)
            return cls(max_ulp=ulps, reason=f"engine may change float32 values by {ulps} ulp")
        return cls()

    @property
    def hash_first(self) -> bool:
        """Vectors with identical float32 bits are equal under this policy, and engines it
        applies to keep most bits: compare hashes, and values only where they differ."""
        return not self.normalize and self.atol == 0.0

    def prepare(self, m: np.ndarray) -> np.ndarray:
        if not self.normalize:
            return m
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        out: np.ndarray = (m / np.maximum(norms, 1e-30)).astype(np.float32)
        return out

    def equal_rows(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """A boolean per row: do the two vectors agree under this policy?"""
        a, b = self.prepare(a), self.prepare(b)
        if self.atol:
            ok: np.ndarray = (np.abs(a - b) <= self.atol).all(axis=1)
            return ok
        ia = a.view(np.int32).astype(np.int64)
        ib = b.view(np.int32).astype(np.int64)
        # map sign-magnitude float bits onto a monotonic integer line, then count ulps
        ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
        ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
        within: np.ndarray = (np.abs(ia - ib) <= self.max_ulp).all(axis=1)
        return within


def float64_equal(a: np.ndarray, b: np.ndarray, ulps: int) -> np.ndarray:
    """Element-wise: equal within ``ulps`` float64 units in the last place (NaN equals NaN)."""
    ia = a.view(np.int64)
    ib = b.view(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFFFFFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFFFFFFFFFF), ib)
    close = np.abs(ia - ib) <= ulps
    both_nan = np.isnan(a) & np.isnan(b)
    out: np.ndarray = close | both_nan
    return out
