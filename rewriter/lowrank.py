"""Depthwise + pointwise factorisation of a full KxK convolution, by per-input-channel truncated SVD.

For a conv weight ``W[Cout, Cin, kh, kw]`` (groups=1), input channel ``i`` contributes the matrix
``M_i = W[:, i].reshape(Cout, kh*kw)``. Its rank-r truncated SVD ``M_i ≈ P_i D_i`` gives a depthwise kernel
``D_i`` (r x kh*kw: r filters reading channel i) and pointwise weights ``P_i`` (Cout x r). Stacked over the
channels this is depthwise(Cin → Cin·r, groups=Cin, channel multiplier r) followed by pointwise
(Cin·r → Cout, 1x1), which is **exact** when ``r >= min(Cout, kh*kw)`` (the rank of every ``M_i``).

Format-free: the ONNX and IR adapters of the ``dwpw`` pass both call this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Factorisation:
    """A depthwise/pointwise pair in *multiplier* channel order: dw channel ``i*r + j`` reads input ``i``."""

    dw: np.ndarray  # Cin*r x 1 x kh x kw
    pw: np.ndarray  # Cout x Cin*r x 1 x 1
    rank: int
    energy: float  # kept fraction of the squared singular values, summed over all channels
    exact: bool  # r >= min(Cout, kh*kw): reproduces the conv up to float rounding

    @property
    def cin(self) -> int:
        return self.dw.shape[0] // self.rank


def full_rank(cout: int, kh: int, kw: int) -> int:
    """The rank at which the factorisation is exact: ``min(Cout, kh*kw)``."""
    return min(cout, kh * kw)


def channel_matrices(w: np.ndarray) -> np.ndarray:
    """``Cin x Cout x kh*kw``: the matrices ``M_i`` of a groups=1 conv weight."""
    cout, cin = w.shape[:2]
    return np.ascontiguousarray(np.asarray(w, np.float64).reshape(cout, cin, -1).transpose(1, 0, 2))


def spectra(w: np.ndarray) -> np.ndarray:
    """Singular values ``Cin x min(Cout, kh*kw)`` of every ``M_i`` (descending)."""
    return np.linalg.svd(channel_matrices(w), compute_uv=False)


def rank_for_energy(w: np.ndarray, energy: float) -> int:
    """Smallest r keeping at least ``energy`` of *each* ``M_i``'s squared singular values (max over i).

    One r for all channels, because a depthwise conv has one channel multiplier. Channels that are all
    zero need no rank; the result is at least 1.
    """
    s2 = spectra(w) ** 2
    total = s2.sum(axis=1, keepdims=True)
    frac = np.divide(np.cumsum(s2, axis=1), total, out=np.ones_like(s2), where=total > 0)
    need = (frac < energy - 1e-12).sum(axis=1) + 1  # first index reaching the fraction, as a count
    return int(max(1, min(need.max(), s2.shape[1])))


def kept_energy(w: np.ndarray, rank: int) -> float:
    """Fraction of the squared singular values (all channels together) kept at ``rank``."""
    s2 = spectra(w) ** 2
    total = float(s2.sum())
    return float(s2[:, :rank].sum()) / total if total > 0 else 1.0


def factorize(w: np.ndarray, rank: int) -> Factorisation:
    """Truncated-SVD depthwise/pointwise pair of ``w`` (Cout x Cin x kh x kw). ``rank`` is clipped to full."""
    cout, cin, kh, kw = w.shape
    r = max(1, min(int(rank), full_rank(cout, kh, kw)))
    u, s, vt = np.linalg.svd(channel_matrices(w), full_matrices=False)  # Cin x Cout x q, Cin x q, Cin x q x K²
    dw = vt[:, :r, :].reshape(cin * r, 1, kh, kw)
    pw = (u[:, :, :r] * s[:, None, :r]).transpose(1, 0, 2).reshape(cout, cin * r, 1, 1)
    s2 = s ** 2
    energy = float(s2[:, :r].sum() / s2.sum()) if s2.sum() > 0 else 1.0
    return Factorisation(dw.astype(np.float32), pw.astype(np.float32), r, energy,
                         r >= full_rank(cout, kh, kw))


def reconstruct(f: Factorisation) -> np.ndarray:
    """The full conv weight ``Cout x Cin x kh x kw`` the pair computes."""
    cr, _, kh, kw = f.dw.shape
    cin, r, cout = cr // f.rank, f.rank, f.pw.shape[0]
    d = f.dw.reshape(cin, r, kh * kw).astype(np.float64)
    p = f.pw.reshape(cout, cin, r).astype(np.float64)
    return np.einsum("oij,ijt->oit", p, d).reshape(cout, cin, kh, kw)


def split_permutation(cin: int, rank: int) -> np.ndarray:
    """Index map from *split* order to *multiplier* order.

    The split form runs r plain depthwise convs (the j-th uses kernels ``D_i[j]``) and concatenates them, so
    its channel ``j*Cin + i`` equals multiplier channel ``i*r + j``: ``pw_split = pw[:, perm]``.
    """
    j, i = np.divmod(np.arange(cin * rank), cin)
    return i * rank + j


def split_kernels(f: Factorisation) -> list[np.ndarray]:
    """The r depthwise kernels (each ``Cin x 1 x kh x kw``) of the split form."""
    cin, r = f.cin, f.rank
    d = f.dw.reshape(cin, r, *f.dw.shape[1:])
    return [np.ascontiguousarray(d[:, j]) for j in range(r)]


def conv_macs(cin: int, cout: int, kh: int, kw: int, ho: int, wo: int, groups: int = 1) -> int:
    """Multiply-accumulates of a conv producing ``Cout x ho x wo``."""
    return cout * (cin // groups) * kh * kw * ho * wo


def pair_macs(cin: int, cout: int, kh: int, kw: int, ho: int, wo: int, rank: int) -> tuple[int, int]:
    """(depthwise MACs, pointwise MACs) of the pair replacing a Cin→Cout KxK conv at rank r."""
    return cin * rank * kh * kw * ho * wo, cin * rank * cout * ho * wo


def pair_params(cin: int, cout: int, kh: int, kw: int, rank: int, bias: bool) -> int:
    """Weights (+ bias) of the pair."""
    return cin * rank * kh * kw + cin * rank * cout + (cout if bias else 0)
