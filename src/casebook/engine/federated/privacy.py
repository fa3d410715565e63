"""The privacy a federation spent: (epsilon, delta) of client-level differential privacy.

With client-side fixed clipping, each round releases the sum of the sites' clipped
updates (L2 sensitivity: the clipping norm) plus Gaussian noise of ``noise_multiplier``
times the clipping norm: a Gaussian mechanism, repeated once per round, with the
sites sampled at ``sample_rate`` (Flower's ``fraction_fit``). Its epsilon at ``delta``
comes from Opacus's Rényi-DP accountant (Mironov 2017; Mironov, Talwar and Zhang 2019).
"""

from __future__ import annotations

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def epsilon(*, noise_multiplier: float, rounds: int, sample_rate: float = 1.0, delta: float = 1e-3) -> float:
    """Epsilon after ``rounds`` rounds (infinite without noise)."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    if noise_multiplier <= 0:
        return float("inf")
    rdp = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=rounds, orders=ORDERS)
    eps, _ = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(eps)
