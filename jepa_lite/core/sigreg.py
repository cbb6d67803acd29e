"""SIGReg, Sketched Isotropic Gaussian Regularization (LeJEPA: Balestriero and LeCun 2025, arXiv 2511.08544).

I-JEPA keeps its embeddings from collapsing with heuristics: an EMA target encoder, a stop-gradient and their
schedules (notebook 04's collapse lab). LeJEPA replaces all of them by one regulariser that pushes the
distribution of a batch of embeddings z [N, K] toward the isotropic Gaussian N(0, I), which it proves optimal
for downstream linear probes. A K-dimensional distribution is N(0, I) exactly when every 1-D projection
<a, z> on a unit direction a is N(0, 1) (Cramer-Wold), so SIGReg draws M random unit directions and tests
each projection with the Epps-Pulley statistic, the weighted distance between the projections' empirical
characteristic function and the Gaussian's:

    EP(x) = N * integral over t of |phi_N(t) - phi(t)|^2 w(t) dt,   phi_N(t) = mean_n exp(i t x_n),
    phi(t) = w(t) = exp(-t^2 / 2)

integrated by the trapezoid rule, then averaged over the M directions. As the reference code does, the
integrand being even, only t in [0, t_max] is evaluated, each weight doubled; |phi_N - phi|^2 is
(mean cos(t x) - phi(t))^2 + (mean sin(t x))^2. It is small for Gaussian samples, large for collapsed or
anisotropic ones, and its gradient is finite even at total collapse (all x_n equal).
"""

from __future__ import annotations

import torch
from torch import Tensor


def epps_pulley(x: Tensor, *, t_max: float = 3.0, points: int = 17) -> Tensor:
    """Epps-Pulley statistic of each column of `x` [N, M] against N(0, 1): [M] (N times the weighted
    squared distance of the characteristic functions, trapezoid rule on `points` t in [0, t_max])."""
    t = torch.linspace(0, t_max, points, device=x.device, dtype=x.dtype)  # [T]
    phi = torch.exp(-0.5 * t.square())  # the Gaussian's characteristic function, also the weight
    dt = t_max / (points - 1)
    trapezoid = torch.full_like(t, 2 * dt)  # doubled: the integral over [-t_max, t_max]
    trapezoid[[0, -1]] = dt
    xt = x.unsqueeze(-1) * t  # [N, M, T]
    err = (xt.cos().mean(0) - phi).square() + xt.sin().mean(0).square()  # [M, T]
    return x.shape[0] * (err @ (trapezoid * phi))


def sigreg(
    z: Tensor,
    *,
    slices: int = 256,
    t_max: float = 3.0,
    points: int = 17,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SIGReg of embeddings z [N, K]: the Epps-Pulley statistic of `slices` projections on random unit
    directions, averaged. A scalar; 0 is a perfect Gaussian, and a few units is noise at N in the hundreds.
    `generator` draws the directions (pass one seeded by the step to fix them across processes)."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"z must be embeddings [N, K] with N >= 2, got shape {tuple(z.shape)}")
    directions = torch.randn(z.shape[1], slices, generator=generator, device=z.device, dtype=z.dtype)
    directions = directions / directions.norm(dim=0)  # [K, M] unit columns
    return epps_pulley(z @ directions, t_max=t_max, points=points).mean()


__all__ = ["epps_pulley", "sigreg"]
