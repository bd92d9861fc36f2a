"""Per-input-channel SVD factorisation: exact at full rank, energy-chosen ranks, split/multiplier orders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewriter import lowrank


@settings(max_examples=40, deadline=None)
@given(cout=st.integers(1, 12), cin=st.integers(1, 6), kh=st.integers(1, 4), kw=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_full_rank_reconstructs_the_weights(cout, cin, kh, kw, seed):
    w = np.random.default_rng(seed).standard_normal((cout, cin, kh, kw)).astype(np.float32)
    f = lowrank.factorize(w, 10_000)  # clipped to min(Cout, kh*kw)
    assert f.rank == lowrank.full_rank(cout, kh, kw) and f.exact
    assert f.dw.shape == (cin * f.rank, 1, kh, kw) and f.pw.shape == (cout, cin * f.rank, 1, 1)
    np.testing.assert_allclose(lowrank.reconstruct(f), w, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    assert f.energy == pytest.approx(1.0)


def test_truncation_error_matches_the_dropped_energy():
    w = np.random.default_rng(0).standard_normal((16, 5, 3, 3))
    for r in (1, 2, 5):
        f = lowrank.factorize(w, r)
        assert not f.exact
        resid = np.linalg.norm(lowrank.reconstruct(f) - w) ** 2 / np.linalg.norm(w) ** 2
        assert resid == pytest.approx(1 - f.energy, rel=1e-4)
        assert f.energy == pytest.approx(lowrank.kept_energy(w, r), rel=1e-6)


def test_rank_for_energy():
    rng = np.random.default_rng(1)
    low = np.einsum("oi,it->oit", rng.standard_normal((8, 4)), rng.standard_normal((4, 9))).reshape(8, 4, 3, 3)
    assert lowrank.rank_for_energy(low, 0.999) == 1  # every M_i is rank 1
    w = rng.standard_normal((16, 4, 3, 3))
    assert lowrank.rank_for_energy(w, 1.0) == 9
    r = lowrank.rank_for_energy(w, 0.8)
    per_channel = (lowrank.spectra(w) ** 2).cumsum(1)[:, r - 1] / (lowrank.spectra(w) ** 2).sum(1)
    assert per_channel.min() >= 0.8 and 1 <= r < 9  # max over channels: every channel keeps 80%
    assert lowrank.rank_for_energy(np.zeros((4, 2, 3, 3)), 0.9) == 1


def test_split_order_computes_the_same_channels():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    f = lowrank.factorize(w, 2)
    patches = rng.standard_normal((10, 3, 9))
    z_mult = np.einsum("pit,ijt->pij", patches, f.dw.reshape(3, 2, 9)).reshape(10, 6)
    z_split = np.concatenate([np.einsum("pit,it->pi", patches, k.reshape(3, 9)) for k in lowrank.split_kernels(f)],
                             axis=1)
    pw = f.pw.reshape(6, 6)
    np.testing.assert_allclose(z_split @ pw[:, lowrank.split_permutation(3, 2)].T, z_mult @ pw.T, atol=1e-5)


def test_mac_and_param_counts():
    assert lowrank.conv_macs(64, 64, 3, 3, 10, 10) == 64 * 64 * 9 * 100
    assert lowrank.conv_macs(64, 64, 3, 3, 10, 10, groups=64) == 64 * 9 * 100
    assert lowrank.pair_macs(64, 32, 3, 3, 10, 10, 2) == (64 * 2 * 9 * 100, 64 * 2 * 32 * 100)
    assert lowrank.pair_params(64, 32, 3, 3, 2, bias=True) == 64 * 2 * 9 + 64 * 2 * 32 + 32
