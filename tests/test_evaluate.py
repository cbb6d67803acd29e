"""Tests for jepa_lite.core.evaluate: probes score ~100% on separable data and ~chance on random labels."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jepa_lite.core.evaluate import (
    MAX_ITER,
    WEIGHT_DECAYS,
    _fit_logreg,
    _standardise,
    evaluate_encoder,
    evaluate_features,
    knn_accuracy,
    linear_probe,
    logreg_loss_and_grad,
    low_shot_indices,
    low_shot_probe,
    probe_fits,
    select_weight_decay,
)
from jepa_lite.core.features import extract_features, feature_std, pixel_features, rankme

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n_per_class: int, *, classes: int = 4, dim: int = 16, sep: float = 10.0, seed: int = 0):
    """Gaussian blobs (unit std) centred at sep * e_c: linearly separable with a wide margin."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    centres = sep * torch.eye(classes, dim)
    x = centres[y] + torch.randn(len(y), dim, generator=gen)
    return x, y


@pytest.fixture(scope="module")
def separable():
    train_x, train_y = blobs(100, seed=0)
    test_x, test_y = blobs(50, seed=1)
    return train_x, train_y, test_x, test_y


@pytest.fixture(scope="module")
def random_labels():
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(400, 16, generator=gen), torch.randn(2000, 16, generator=gen)
    train_y, test_y = torch.randint(0, 4, (400,), generator=gen), torch.randint(0, 4, (2000,), generator=gen)
    return train_x, train_y, test_x, test_y


# ---------------------------------------------------------------------------------------------------------
# accuracy on separable data and on random labels


def test_linear_probe_separates_blobs(separable):
    assert linear_probe(*separable) >= 99.0


def test_knn_separates_blobs(separable):
    assert knn_accuracy(*separable) >= 99.0


def test_low_shot_separates_blobs(separable):
    assert low_shot_probe(*separable, per_class=5) >= 97.0


def test_probes_are_at_chance_on_random_labels(random_labels):
    # 4 classes -> 25%; with 2000 test samples the std of a chance score is ~1 point.
    for acc in (
        linear_probe(*random_labels),
        knn_accuracy(*random_labels),
        low_shot_probe(*random_labels, per_class=20),
    ):
        assert abs(acc - 25.0) < 6.0, acc


def test_linear_probe_is_invariant_to_feature_scale(separable):
    # Standardisation uses train statistics: rescaling and shifting every dim changes nothing.
    train_x, train_y, test_x, test_y = separable
    scale, shift = torch.logspace(-3, 3, 16), torch.linspace(-50, 50, 16)
    acc = linear_probe(train_x * scale + shift, train_y, test_x * scale + shift, test_y)
    assert acc >= 99.0


def test_linear_probe_works_under_inference_mode(separable):
    with torch.inference_mode():
        assert linear_probe(*separable) >= 99.0


def test_select_weight_decay_returns_a_rescaled_grid_value(separable):
    train_x, train_y, _, _ = separable
    wd = select_weight_decay(train_x, train_y, 4, WEIGHT_DECAYS)
    # 400 samples: 80 held out, the candidates fit on the other 320, winner rescaled by 320 / 400.
    assert any(math.isclose(wd, w * 320 / 400) for w in WEIGHT_DECAYS)
    assert select_weight_decay(train_x, train_y, 4, [0.5]) == 0.5


def test_closed_form_probe_gradient_matches_autograd():
    # The probe's hand-written gradient must be the gradient of its objective: autograd through
    # F.cross_entropy on the same weights gives the same loss and the same dL/dW, dL/db.
    gen = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(500, 12, generator=gen, dtype=torch.float64),
        torch.randint(0, 7, (500,), generator=gen),
    )
    weight = torch.randn(7, 12, generator=gen, dtype=torch.float64).requires_grad_()
    bias = torch.randn(7, generator=gen, dtype=torch.float64).requires_grad_()
    wd = 0.3
    loss, grad_w, grad_b = logreg_loss_and_grad(x, y, weight, bias, wd)
    ref = F.cross_entropy(x @ weight.t() + bias, y) + 0.5 * wd * weight.square().sum()
    ref_w, ref_b = torch.autograd.grad(ref, [weight, bias])
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w, ref_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_b, ref_b, rtol=1e-10, atol=1e-12)
    assert grad_w.abs().max() > 1e-2  # a non-trivial point: the gradient is far from zero there


def test_probe_fit_reaches_the_optimum_on_ill_conditioned_overlapping_classes():
    """Trained encoders give correlated, overlapping features that L-BFGS needs 1000+ iterations on; the probe
    must end at a stationary point of its penalised loss (100 iterations stopped with a 70x larger gradient and
    5 points less accuracy here, which under-rated every trained encoder)."""
    gen = torch.Generator().manual_seed(0)
    n, dim, classes, wd = 3000, 48, 5, 1e-5
    y = torch.randint(0, classes, (n,), generator=gen)
    x = torch.randn(n, dim, generator=gen) + 0.3 * torch.randn(classes, dim, generator=gen)[y]
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0]
    (x,) = _standardise((x * torch.logspace(0, -3, dim)) @ rotation)  # scales 1 .. 1e-3, then mixed
    probe = _fit_logreg(x, y, classes, wd, MAX_ITER)
    loss = F.cross_entropy(probe(x), y) + 0.5 * wd * probe.weight.square().sum()
    grad = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(probe.parameters()))])
    assert grad.norm() < 1e-3
    assert (probe(x).argmax(1) == y).float().mean() > 0.78  # the optimum's training accuracy (~0.787)


def test_probe_fit_is_not_stopped_early_by_a_rounded_loss():
    """On thousands of samples the loss must be summed per sample: a difference of two large float32 sums
    (sum of logsumexps minus sum of picked logits) jitters by more than L-BFGS's tolerance_change and stopped
    this fit at a 25x larger gradient."""
    gen = torch.Generator().manual_seed(0)
    n, wd = 8000, 1e-6
    y = torch.randint(0, 10, (n,), generator=gen)
    z = torch.randn(n, 16, generator=gen) + torch.randn(10, 16, generator=gen)[y]
    (x,) = _standardise(torch.relu(z @ torch.randn(16, 64, generator=gen)))  # ReLU features, like a ViT's
    probe = _fit_logreg(x, y, 10, wd, MAX_ITER)
    weight, bias = probe.weight.detach().double(), probe.bias.detach().double()
    _, grad_w, grad_b = logreg_loss_and_grad(x.double(), y, weight, bias, wd)
    assert torch.cat([grad_w.flatten(), grad_b]).norm() < 1e-4  # 2e-5 when summed per sample, 6e-4 if not


# ---------------------------------------------------------------------------------------------------------
# determinism


def test_probes_are_deterministic(separable, random_labels):
    for data in (separable, random_labels):
        assert linear_probe(*data) == linear_probe(*data)
        assert knn_accuracy(*data) == knn_accuracy(*data)
        assert low_shot_probe(*data, per_class=10, seed=3) == low_shot_probe(*data, per_class=10, seed=3)


# ---------------------------------------------------------------------------------------------------------
# k-NN specifics


def test_knn_with_k1_is_nearest_neighbour_by_cosine():
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(200, 8, generator=gen), torch.randn(300, 8, generator=gen)
    train_y, test_y = torch.randint(0, 5, (200,), generator=gen), torch.randint(0, 5, (300,), generator=gen)
    sim = nn.functional.normalize(test_x, dim=1) @ nn.functional.normalize(train_x, dim=1).T
    expected = 100.0 * (train_y[sim.argmax(dim=1)] == test_y).float().mean().item()
    # Magnitudes must not matter (cosine), nor the test batch size.
    got = knn_accuracy(train_x * 7.0, train_y, test_x, test_y, k=1, batch_size=7)
    assert got == pytest.approx(expected)


def test_knn_vote_is_weighted_by_similarity():
    # Query e1; one class-0 neighbour at cosine 1.0, two class-1 neighbours at cosine 0.9.
    a = math.sqrt(1 - 0.9**2)
    train_x = torch.tensor([[1.0, 0.0, 0.0], [0.9, a, 0.0], [0.9, 0.0, a]])
    train_y = torch.tensor([0, 1, 1])
    test_x, test_y = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0])
    # T = 0.07: exp(1/T) > 2 exp(0.9/T), the close neighbour wins; T huge: plain majority, class 1 wins.
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=3, temperature=0.07) == 100.0
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=3, temperature=1e6) == 0.0


# ---------------------------------------------------------------------------------------------------------
# low-shot indices


def test_low_shot_indices_picks_exactly_n_per_class():
    labels = torch.randint(0, 10, (5000,), generator=torch.Generator().manual_seed(0))
    idx = low_shot_indices(labels, 7, seed=1)
    assert idx.dtype == torch.long and len(idx) == 70
    assert len(idx.unique()) == 70 and torch.equal(idx, idx.sort().values)
    assert torch.equal(torch.bincount(labels[idx], minlength=10), torch.full((10,), 7))


def test_low_shot_indices_is_seeded():
    labels = torch.arange(10).repeat(100)
    assert torch.equal(low_shot_indices(labels, 5, seed=0), low_shot_indices(labels, 5, seed=0))
    assert not torch.equal(low_shot_indices(labels, 5, seed=0), low_shot_indices(labels, 5, seed=1))


def test_low_shot_indices_all_samples_when_per_class_is_the_class_size():
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    assert torch.equal(low_shot_indices(labels, 2), torch.arange(6))


# ---------------------------------------------------------------------------------------------------------
# RankMe and feature std


def test_rankme_of_isotropic_gaussian_is_close_to_dim():
    feats = torch.randn(4000, 32, generator=torch.Generator().manual_seed(0))
    assert 31.0 < rankme(feats) <= 32.0


def test_rankme_of_rank_one_features_is_close_to_one():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 1, generator=gen) * torch.randn(1, 64, generator=gen)
    assert 1.0 <= rankme(feats) < 1.01


def test_rankme_counts_the_used_dimensions():
    feats = torch.zeros(2000, 64)
    feats[:, :8] = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0))
    assert 7.5 < rankme(feats) < 8.01


def test_rankme_uses_l1_normalised_singular_values():
    # Singular values (2, 1, 1) -> p = (1/2, 1/4, 1/4), entropy 1.5 ln 2, effective rank 2 ** 1.5.
    rotation = torch.linalg.qr(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))[0]
    feats = rotation @ torch.diag(torch.tensor([2.0, 1.0, 1.0]))
    assert rankme(feats) == pytest.approx(2**1.5, rel=1e-5)


def test_feature_std_detects_collapse():
    gen = torch.Generator().manual_seed(0)
    collapsed = torch.randn(1, 64, generator=gen).expand(1000, 64) + 1e-6 * torch.randn(
        1000, 64, generator=gen
    )
    assert feature_std(collapsed) < 1e-4
    assert feature_std(torch.randn(1000, 64, generator=gen)) == pytest.approx(1 / 8, rel=0.05)


# ---------------------------------------------------------------------------------------------------------
# feature extraction


class TokenEncoder(nn.Module):
    """Fake encoder: tokens [B, H*W, C] are the pixels; pooled features are per-channel image means."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.modes = []

    def forward(self, images):
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        return self.scale * images.flatten(2).transpose(1, 2)


def image_set(n=37, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 4, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen))


@pytest.mark.parametrize("training", [True, False])
def test_extract_features_mean_pools_tokens_and_restores_mode(training):
    dataset, encoder = image_set(), TokenEncoder()
    encoder.train(training)
    feats, labels = extract_features(encoder, dataset, batch_size=8, progress=False)
    assert feats.dtype == torch.float32 and feats.shape == (37, 3)
    torch.testing.assert_close(feats, dataset.tensors[0].mean(dim=(2, 3)))
    assert torch.equal(labels, dataset.tensors[1])
    assert encoder.training is training
    assert len(encoder.modes) == 5 and all(mode == (False, True) for mode in encoder.modes)


def test_extract_features_accepts_a_dataloader_and_restores_mode_on_error():
    dataset, encoder = image_set(), TokenEncoder()
    feats, _ = extract_features(encoder, DataLoader(dataset, batch_size=10), progress=False)
    torch.testing.assert_close(feats, dataset.tensors[0].mean(dim=(2, 3)))

    class Broken(TokenEncoder):
        def forward(self, images):
            raise RuntimeError("boom")

    broken = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(broken, dataset, progress=False)
    assert broken.training


def test_pixel_features_flattens_images():
    dataset = image_set()
    x, y = pixel_features(dataset)
    assert x.shape == (37, 48) and x.dtype == torch.float32 and y.dtype == torch.long
    torch.testing.assert_close(x, dataset.tensors[0].reshape(37, -1))


# ---------------------------------------------------------------------------------------------------------
# evaluate_features / evaluate_encoder


def test_evaluate_features_reports_every_metric(separable):
    out = evaluate_features(*separable, per_class=5)
    assert set(out) == {"linear_probe", "knn", "low_shot", "rankme"}
    assert out["linear_probe"] >= 99 and out["knn"] >= 99 and out["low_shot"] >= 97
    assert 1.0 <= out["rankme"] <= 16.0


def test_progress_bar_counts_every_probe_fit_and_changes_no_number(separable, capsys):
    quiet = evaluate_features(*separable, per_class=5)
    loud = evaluate_features(*separable, per_class=5, progress=True)
    assert loud == quiet
    err = capsys.readouterr().err
    # linear probe and low-shot: one fit per L2 strength, then the final one; k-NN and RankMe one step each
    fits = 2 * (len(WEIGHT_DECAYS) + 1) + 2
    assert f"/{fits} " in err and probe_fits() == len(WEIGHT_DECAYS) + 1
    for stage in (
        "linear probe",
        "k-NN",
        "1% low-shot",
        "RankMe",
    ):  # the bar names each stage as it reaches it
        assert stage in err, stage


def test_linear_probe_reports_each_fit_and_each_loss_evaluation(separable):
    fits, evals = [], []
    linear_probe(*separable, on_fit=lambda: fits.append(1), on_eval=lambda: evals.append(1))
    assert len(fits) == probe_fits() and len(evals) >= len(
        fits
    )  # L-BFGS evaluates the loss at least once a fit
    fits.clear()
    linear_probe(*separable, weight_decay=1e-3, on_fit=lambda: fits.append(1))
    assert len(fits) == 1 == probe_fits(1)  # one strength given: no selection fits


def test_evaluate_encoder_matches_evaluate_features():
    train, test, encoder = image_set(60, seed=0), image_set(30, seed=1), TokenEncoder()
    out = evaluate_encoder(encoder, train, test, per_class=5, batch_size=16, progress=False)
    train_x, train_y = train.tensors[0].mean(dim=(2, 3)), train.tensors[1]
    test_x, test_y = test.tensors[0].mean(dim=(2, 3)), test.tensors[1]
    assert out == pytest.approx(evaluate_features(train_x, train_y, test_x, test_y, per_class=5))


# ---------------------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_raise_value_error_naming_the_parameter(separable):
    train_x, train_y, test_x, test_y = separable
    with pytest.raises(ValueError, match="train_y"):
        linear_probe(train_x, train_y[:-1], test_x, test_y)
    with pytest.raises(ValueError, match="test_y"):
        knn_accuracy(train_x, train_y, test_x, test_y[:-1])
    with pytest.raises(ValueError, match="test_x"):
        linear_probe(train_x, train_y, test_x[:, :8], test_y)
    with pytest.raises(ValueError, match="train_x"):
        linear_probe(train_x[0], train_y, test_x, test_y)
    with pytest.raises(ValueError, match="per_class"):
        low_shot_probe(train_x, train_y, test_x, test_y, per_class=101)
    with pytest.raises(ValueError, match="per_class"):
        low_shot_indices(train_y, 0)
    for k in (0, -3, 401):
        with pytest.raises(ValueError, match="k must"):
            knn_accuracy(train_x, train_y, test_x, test_y, k=k)
    with pytest.raises(ValueError, match="temperature"):
        knn_accuracy(train_x, train_y, test_x, test_y, temperature=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        linear_probe(train_x, train_y, test_x, test_y, weight_decay=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        linear_probe(train_x, train_y, test_x, test_y, max_iter=0)
    with pytest.raises(ValueError, match="feats"):
        rankme(torch.zeros(5))
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(TokenEncoder(), image_set(), batch_size=0, progress=False)


def test_features_on_a_cpu_are_fp32_whatever_the_cpu_multiplies_natively():
    """'auto' precision is bf16 on a bf16 GPU only: on every CPU the features, and so every recorded probe,
    are the fp32 ones, on a CPU with AMX as on one without."""
    from jepa_lite.core.models import ViTEncoder

    torch.manual_seed(0)
    enc = ViTEncoder(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2)
    data = TensorDataset(torch.randn(8, 1, 16, 16), torch.zeros(8, dtype=torch.long))
    auto, _ = extract_features(enc, data, progress=False, device="cpu")
    fp32, _ = extract_features(enc, data, progress=False, device="cpu", precision="fp32")
    bf16, _ = extract_features(enc, data, progress=False, device="cpu", precision="bf16")
    assert torch.equal(auto, fp32) and not torch.equal(auto, bf16)
