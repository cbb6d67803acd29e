"""SIGReg (LeJEPA): small on Gaussian samples, large on collapsed or anisotropic ones, equal to the paper's
Algorithm 1 on the same projections, finite gradients at collapse, and a descent that makes samples Gaussian."""

import math

import pytest
import torch

from jepa_lite.core.sigreg import epps_pulley, sigreg

pytestmark = pytest.mark.usefixtures("one_thread")


def algorithm_1(projections: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The paper's Algorithm 1 (arXiv 2511.08544), one process: the complex empirical characteristic function
    on a symmetric grid t, weighted by the Gaussian's, integrated by torch.trapz, times N, mean over slices.
    (Written out here: the authors' package is not on PyPI.)"""
    exp_f = torch.exp(-0.5 * t**2)
    x_t = projections.unsqueeze(2) * t  # [N, M, T]
    ecf = (1j * x_t).exp().mean(0)  # [M, T]
    err = (ecf - exp_f).abs().square().mul(exp_f)
    return torch.trapz(err, t, dim=1) * projections.shape[0]  # [M]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_equals_algorithm_1_on_the_same_projections():
    x = torch.distributions.Exponential(1.0).sample((300, 12)).double() - 1  # skewed: far from Gaussian
    ours = epps_pulley(x, t_max=5.0, points=9)  # [0, 5], weights doubled ...
    reference = algorithm_1(x, torch.linspace(-5, 5, 17, dtype=torch.float64))  # ... = [-5, 5], 17 points
    assert torch.allclose(ours, reference, rtol=1e-10)


def test_small_on_gaussian_samples_large_on_collapsed_or_anisotropic_ones():
    z = torch.randn(512, 64, generator=_gen(0))
    gaussian = sigreg(z, generator=_gen(1)).item()
    # the expected statistic of Gaussian samples: integral of (1 - phi^2) phi over [-3, 3], about 1.06
    assert 0.5 < gaussian < 2.0
    assert sigreg(torch.zeros(512, 64) + 0.3, generator=_gen(1)).item() > 100 * gaussian  # collapsed
    assert sigreg(z * 3, generator=_gen(1)).item() > 20 * gaussian  # too wide in every direction
    rank_one = torch.randn(512, 1, generator=_gen(2)) * torch.randn(1, 64, generator=_gen(3)) / 8
    assert sigreg(rank_one, generator=_gen(1)).item() > 20 * gaussian  # dimensional collapse
    assert sigreg(z, generator=_gen(1)).item() == gaussian  # the generator fixes the directions


def test_gradients_are_finite_at_collapse_and_push_the_embeddings_apart():
    z = torch.full((64, 8), 0.5, requires_grad=True)
    z.data += 1e-3 * torch.randn(64, 8, generator=_gen(0))
    sigreg(z, generator=_gen(1)).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    step = z - 0.01 * z.grad / z.grad.norm()
    assert step.std(0).mean() > z.std(0).mean()  # the descent direction spreads the collapsed points


def test_descending_sigreg_alone_makes_a_collapsed_batch_isotropic_gaussian():
    z = (0.01 * torch.randn(256, 4, generator=_gen(0))).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    for step in range(300):
        loss = sigreg(z, slices=64, generator=_gen(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = z.detach()
    assert sigreg(z, generator=_gen(9999)).item() < 2.0
    cov = torch.cov(z.T)
    assert torch.allclose(cov, torch.eye(4), atol=0.25) and z.mean(0).abs().max() < 0.15


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"embeddings \[N, K\] with N >= 2"):
        sigreg(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="got shape \\(8,\\)"):
        sigreg(torch.zeros(8))


def test_the_gaussian_expectation_the_threshold_rests_on():
    """E[EP] for Gaussian samples is the integral of (1 - phi(t)^2) phi(t): check the 1.06 quoted above."""
    t = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    phi = torch.exp(-0.5 * t**2)
    assert torch.trapz((1 - phi**2) * phi, t).item() == pytest.approx(
        math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3), abs=0.02
    )


# ----------------------------------------------------------------------------------------------------------
# the two methods built on it: LeJEPA, and I-JEPA with SIGReg in place of the EMA teacher


def _train(method: str, lam: float, epochs: int):
    from conftest import Blobs, tiny_config
    from jepa_lite.core.train import train

    cfg = tiny_config(f"method.name={method}", f"method.sigreg_weight={lam}", f"optim.epochs={epochs}",
                      "method.sigreg_slices=64", "method.target_mode=online")  # fmt: skip
    return train(cfg, dataset=Blobs(), progress=False), Blobs().x


def test_lejepa_loss_is_the_papers_equation_on_its_views():
    from conftest import tiny_config
    from jepa_lite.core.build import build_method
    from jepa_lite.core.collate import Batch
    from jepa_lite.core.views import augment_views

    method = build_method(tiny_config("method.name=lejepa", "method.views=[2,1]")).train()
    images = torch.randn(8, 1, 16, 16, generator=_gen(0))
    batch = Batch(images, torch.zeros(8, 1, dtype=torch.long), torch.zeros(8, 1, 1, dtype=torch.long))
    torch.manual_seed(3)
    loss, logs = method(batch)
    torch.manual_seed(3)  # the same crops, and the same SIGReg directions
    views = [augment_views(images, crop_scale=s) for s in (method.global_scale,) * 2 + (method.local_scale,)]
    z = method.projector(method.encoder(torch.cat(views)).mean(1)).reshape(
        3, 8, -1
    )  # [V, B, K], one BN batch
    prediction = ((z[0] + z[1]) / 2 - z).square().mean()
    assert logs["prediction"].item() == pytest.approx(prediction.item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.95 * prediction.item() + 0.05 * logs["sigreg"].item(), rel=1e-6)


@pytest.mark.parametrize("method", ["lejepa", "ijepa_sigreg"])
def test_the_sigreg_methods_train_and_their_loss_falls(method):
    result, _ = _train(method, 0.05, epochs=8)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 32 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-4:]) < sum(losses[:4])
    assert result.method.eval_encoder is (
        result.method.encoder if method == "lejepa" else result.method.context_encoder
    )


@pytest.mark.slow
@pytest.mark.parametrize("method, epochs", [("ijepa_sigreg", 8), ("lejepa", 30)])
def test_without_sigreg_they_collapse(method, epochs):
    """Nothing else stops a teacher-free JEPA from collapsing: with lambda = 0 the encoder's features lose
    rank (RankMe) and, for LeJEPA, the projected embeddings shrink toward one point."""
    from jepa_lite.core.features import rankme

    seen = {}
    for lam in (0.05, 0.0):
        result, images = _train(method, lam, epochs)
        m = result.method.eval()
        with torch.no_grad():
            h = m.eval_encoder(images).mean(1)
            z = m.projector(h) if method == "lejepa" else h
        seen[lam] = rankme(h), z.std(0).mean().item()
    assert seen[0.05][0] > 1.4 * seen[0.0][0]
    if method == "lejepa":
        assert seen[0.05][1] > 3 * seen[0.0][1]
