"""Frozen-feature evaluation: linear probe, k-NN, low-shot probe (features.py extracts the features).

Following the I-JEPA paper (appendix A.1), an encoder is evaluated on frozen features average-pooled over
its patch tokens. Every metric here is a pure function of feature tensors `[N, D]` and labels `[N]`, so the
same code scores a pretrained encoder, a random one, or the raw-pixel baseline (`pixel_features`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .features import _describe, extract_features, module_device, rankme

# L2 strengths tried by `linear_probe` (penalty `wd/2 * ||W||^2` added to the mean cross-entropy), the size
# of the seeded hold-out split used to choose among them, and that split's seed. Pooled features of a trained
# encoder are nearly separable and want a weak penalty, so the strengths reach down to 1e-6 and the held-out
# split, not a default, picks one.
WEIGHT_DECAYS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
VAL_FRACTION = 0.2  # share of the training features held out for validation ...
MAX_VAL = 10_000  # ... at most this many
MAX_SELECT_FIT = 5_000  # the selection probes are fit on at most this many of the remaining features
SPLIT_SEED = 0
# L-BFGS budget of one probe fit. A weakly penalised probe on correlated pooled features needs 1000+
# iterations to converge (it stops earlier once the loss stops changing); a fit cut short under-rates ViT
# features by points, while raw pixels converge quickly, so a short budget would flatter pixels against every
# encoder.
MAX_ITER = 5000
LBFGS_HISTORY = 50  # curvature pairs kept: more pairs, fewer iterations to converge on correlated features
# Version of this probing protocol, recorded with every result (run JSONs, pretrain's and evaluate's
# results.json): bump it when a change moves the probes' numbers, so older results are marked stale.
PROBE_VERSION = 2


# ----------------------------------------------------------------------------------------------------------
# input checks


def _check_xy(x: Tensor, y: Tensor, x_name: str, y_name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise ValueError(f"{x_name} must be a 2-D feature tensor [N, D], got {_describe(x)}")
    if not isinstance(y, Tensor) or y.ndim != 1:
        raise ValueError(f"{y_name} must be a 1-D label tensor [N], got {_describe(y)}")
    if len(x) != len(y):
        raise ValueError(f"{x_name} has {len(x)} rows but {y_name} has {len(y)} labels; they must match")
    if len(x) == 0:
        raise ValueError(f"{x_name} is empty; need at least one sample")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.min() < 0:
        raise ValueError(f"{y_name} must hold non-negative integer class labels, got dtype {y.dtype}")


def _check_probe_inputs(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> int:
    """Validate a train/test pair of (features, labels); return the number of classes."""
    _check_xy(train_x, train_y, "train_x", "train_y")
    _check_xy(test_x, test_y, "test_x", "test_y")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x has {train_x.shape[1]} feature dims but test_x has {test_x.shape[1]}; they must match"
        )
    return int(max(train_y.max(), test_y.max())) + 1


# ----------------------------------------------------------------------------------------------------------
# linear probe


def _moments(train_x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dim mean and std of the training features; constant dims (std ~ 0) get std 1 (only centred)."""
    train_x = train_x.float()
    mean, std = train_x.mean(dim=0), train_x.std(dim=0)
    return mean, torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))


def _standardise(train_x: Tensor, *others: Tensor) -> list[Tensor]:
    """Zero mean, unit std per dim using train statistics."""
    mean, std = _moments(train_x)
    return [(t.to(mean.device).float() - mean) / std for t in (train_x, *others)]


@torch.no_grad()
def logreg_loss_and_grad(
    x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, weight_decay: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The probe's objective, mean cross-entropy + wd/2 * ||W||^2, and its gradient in closed form.

    x [N, D], y [N], weight [K, D], bias [K] -> (loss [], dL/dW [K, D], dL/db [K]). With
    p = softmax(x W^T + b), dL/dlogits = (p - onehot(y)) / N, so dL/dW = (dL/dlogits)^T x + wd W and dL/db
    sums it over samples. The same numbers as autograd through F.cross_entropy, in about 0.6 of its CPU time
    on 60,000 x 192 features: a softmax over only 10 classes is slow as a row-wise kernel, and here it is one
    exp of logits minus their logsumexp. The loss subtracts per sample before summing: a difference of two
    large float32 sums would be off by more than L-BFGS's tolerance_change and stop the fit early.
    """
    n = len(x)
    logits = torch.addmm(bias, x, weight.t())  # [N, K]
    lse = logits.logsumexp(dim=1, keepdim=True)  # [N, 1]
    nll = lse - logits.gather(1, y[:, None])  # [N, 1] per-sample cross-entropy, subtracted before summing
    loss = nll.mean() + 0.5 * weight_decay * weight.square().sum()
    dlogits = logits.sub_(lse).exp_()  # softmax, in place of the logits
    dlogits.scatter_add_(1, y[:, None], dlogits.new_full((n, 1), -1.0)).div_(n)
    return loss, torch.addmm(weight, dlogits.t(), x, beta=weight_decay), dlogits.sum(dim=0)


def _fit_logreg(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    on_eval: Callable[[], None] | None = None,
) -> nn.Linear:
    """Multinomial logistic regression: mean cross-entropy + wd/2 * ||W||^2, full-batch L-BFGS from zero.
    `on_eval()` is called at every loss evaluation (progress of a long fit)."""
    with torch.inference_mode(False):  # the probe's parameters are normal tensors even under inference_mode
        model = nn.Linear(x.shape[1], num_classes, device=x.device)
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
        opt = torch.optim.LBFGS(
            model.parameters(),
            lr=1.0,
            max_iter=max_iter,
            history_size=LBFGS_HISTORY,
            tolerance_grad=1e-6,
            tolerance_change=1e-9,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            loss, model.weight.grad, model.bias.grad = logreg_loss_and_grad(
                x, y, model.weight, model.bias, weight_decay=weight_decay
            )
            if on_eval is not None:
                on_eval()
            return loss

        opt.step(closure)
    return model


@torch.no_grad()
def _accuracy(model: nn.Linear, x: Tensor, y: Tensor) -> float:
    return 100.0 * (model(x).argmax(dim=1) == y).float().mean().item()


def select_weight_decay(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    decays: Sequence[float],
    *,
    max_iter: int = MAX_ITER,
    on_fit: Callable[[], None] | None = None,
    on_eval: Callable[[], None] | None = None,
) -> float:
    """Choose the L2 strength for a probe on all of `x` [N, D] (standardised) by a seeded hold-out split.

    Holds out min(20%, 10k) samples, fits one probe per wd on at most 5k of the rest, and keeps the most
    accurate (ties: the larger wd). The winner is rescaled by n_fit / N for the fit on all N samples, keeping
    the summed-loss penalty N * wd fixed (the prior does not grow with data); a subset fit stays cheap.
    `on_fit()` is called after each fit and `on_eval()` at each loss evaluation (progress bars).
    """
    n = len(x)
    n_val = min(int(n * VAL_FRACTION), MAX_VAL)
    n_fit = min(n - n_val, MAX_SELECT_FIT)
    if len(decays) == 1 or n_val < 1 or n_fit < 1:
        return float(decays[0])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).to(x.device)
    val, fit = perm[:n_val], perm[n_val : n_val + n_fit]
    x_fit, y_fit, x_val, y_val = x[fit], y[fit], x[val], y[val]
    scores = []
    for wd in decays:
        model = _fit_logreg(x_fit, y_fit, num_classes, wd, max_iter=max_iter, on_eval=on_eval)
        scores.append((_accuracy(model, x_val, y_val), wd))
        if on_fit is not None:
            on_fit()
    return max(scores)[1] * n_fit / n


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    weight_decay: float | Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = MAX_ITER,
    on_fit: Callable[[], None] | None = None,
    on_eval: Callable[[], None] | None = None,
) -> float:
    """Test accuracy (%) of a multinomial logistic-regression probe on standardised frozen features.

    Features are standardised with the train mean/std; the probe (zero init, full-batch L-BFGS with a
    strong-Wolfe line search, loss = mean cross-entropy + wd/2 * ||W||^2) is fit on all training features
    until the loss stops changing (at most `max_iter` iterations: a probe stopped early under-rates features).
    A float `weight_decay` is used as is; a sequence is searched by `select_weight_decay` (seeded hold-out
    split). Deterministic for fixed inputs. `on_fit()` is called after each L-BFGS fit, `on_eval()` at each
    loss evaluation (progress bars).
    """
    num_classes = _check_probe_inputs(train_x, train_y, test_x, test_y)
    decays = (
        [float(weight_decay)] if isinstance(weight_decay, (int, float)) else [float(w) for w in weight_decay]
    )
    if not decays or any(not math.isfinite(w) or w < 0 for w in decays):
        raise ValueError(
            f"weight_decay must be a float >= 0 or a non-empty sequence of them, got {weight_decay}"
        )
    if max_iter <= 0:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    train_x, test_x = _standardise(train_x, test_x)
    train_y, test_y = train_y.to(train_x.device).long(), test_y.to(train_x.device).long()
    wd = select_weight_decay(
        train_x, train_y, num_classes, decays, max_iter=max_iter, on_fit=on_fit, on_eval=on_eval
    )
    model = _fit_logreg(train_x, train_y, num_classes, wd, max_iter=max_iter, on_eval=on_eval)
    if on_fit is not None:
        on_fit()
    return _accuracy(model, test_x, test_y)


def fit_linear_classifier(
    train_x: Tensor,
    train_y: Tensor,
    *,
    weight_decay: float | Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = MAX_ITER,
) -> Callable[[Tensor], Tensor]:
    """The probe of `linear_probe` (same standardisation, L2 choice and L-BFGS fit) as a classifier:
    returns `predict(features [B, D]) -> labels [B]`, to judge other images with one fixed probe."""
    num_classes = _check_probe_inputs(train_x, train_y, train_x[:1], train_y[:1])
    mean, std = _moments(train_x)
    (x,), y = _standardise(train_x), train_y.to(mean.device).long()
    decays = [float(weight_decay)] if isinstance(weight_decay, (int, float)) else list(weight_decay)
    wd = select_weight_decay(x, y, num_classes, decays, max_iter=max_iter) if len(decays) > 1 else decays[0]
    model = _fit_logreg(x, y, num_classes, wd, max_iter=max_iter)

    @torch.no_grad()
    def predict(feats: Tensor) -> Tensor:
        return model((feats.float().to(mean.device) - mean) / std).argmax(dim=1)

    return predict


def probe_fits(n_decays: int = len(WEIGHT_DECAYS)) -> int:
    """L-BFGS fits of one `linear_probe` call: one per L2 strength tried (if several), then the final fit."""
    return n_decays + 1 if n_decays > 1 else 1


# ----------------------------------------------------------------------------------------------------------
# k-NN and low-shot


@torch.no_grad()
def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> float:
    """Weighted k-NN test accuracy (%): cosine similarity, each of the k neighbours votes exp(sim / T)."""
    num_classes = _check_probe_inputs(train_x, train_y, test_x, test_y)
    if not 1 <= k <= len(train_x):
        raise ValueError(f"k must lie in [1, {len(train_x)}] (the number of training samples), got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    train = F.normalize(train_x.float(), dim=1)
    test = F.normalize(test_x.float(), dim=1).to(train.device)
    train_y, test_y = train_y.to(train.device).long(), test_y.to(train.device).long()
    correct = 0
    for start in range(0, len(test), batch_size):
        sim = test[start : start + batch_size] @ train.T  # [b, N_train]
        top_sim, top_idx = sim.topk(k, dim=1)  # [b, k]
        votes = torch.zeros(len(sim), num_classes, device=sim.device)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += (votes.argmax(dim=1) == test_y[start : start + batch_size]).sum().item()
    return 100.0 * correct / len(test)


def low_shot_indices(labels: Tensor, per_class: int, *, seed: int = 0) -> Tensor:
    """Indices (sorted, long) of `per_class` samples drawn at random from every class present in `labels`."""
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D label tensor [N], got {_describe(labels)}")
    if per_class <= 0:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = labels.cpu()
    classes, counts = labels.unique(return_counts=True)
    if len(classes) == 0:
        raise ValueError("labels is empty; no samples to choose from")
    if counts.min() < per_class:
        c = classes[counts.argmin()].item()
        raise ValueError(
            f"per_class={per_class} is larger than the {counts.min().item()} samples of class {c}; "
            f"use per_class <= {counts.min().item()}"
        )
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().squeeze(1)
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picked).sort().values


def low_shot_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    per_class: int = 60,
    seed: int = 0,
    **probe_kwargs,
) -> float:
    """Linear-probe test accuracy (%) using only `per_class` labelled training samples per class."""
    _check_probe_inputs(train_x, train_y, test_x, test_y)
    idx = low_shot_indices(train_y, per_class, seed=seed).to(train_x.device)
    return linear_probe(train_x[idx], train_y[idx], test_x, test_y, **probe_kwargs)


# ----------------------------------------------------------------------------------------------------------
# all together


def evaluate_features(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    per_class: int = 60,
    max_iter: int = MAX_ITER,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "probes",
) -> dict[str, float]:
    """All frozen-feature metrics: keys `linear_probe`, `knn`, `low_shot` (accuracies in %) and `rankme`
    (of the test features). `max_iter` bounds the L-BFGS iterations of each probe fit. `device`: where the
    probes run (default: where the features are); on a GPU the L-BFGS fits take seconds instead of minutes.
    `progress`: a bar that advances with each of the probes' fits (the linear probe's last fit, on every
    training feature, is the long one on a CPU)."""
    _check_probe_inputs(train_x, train_y, test_x, test_y)
    if device is not None:
        train_x, train_y, test_x, test_y = (t.to(device) for t in (train_x, train_y, test_x, test_y))
    fits = 2 * probe_fits() + 2  # linear probe, low-shot probe, then k-NN and RankMe as one step each
    with tqdm(total=fits, desc=desc, unit="fit", disable=not progress, leave=False) as bar:
        evals = [0, ""]  # loss evaluations of the current fit, stage name

        def start(name: str) -> None:
            evals[:] = [0, name]
            bar.set_postfix_str(name, refresh=True)

        def on_fit() -> None:
            evals[0] = 0
            bar.update()

        def on_eval() -> None:  # the long fits: show that L-BFGS is moving
            evals[0] += 1
            if evals[0] % 100 == 0:
                bar.set_postfix_str(f"{evals[1]}: {evals[0]} L-BFGS steps", refresh=True)

        hooks = dict(max_iter=max_iter, on_fit=on_fit, on_eval=on_eval)
        start("linear probe")
        out = {"linear_probe": linear_probe(train_x, train_y, test_x, test_y, **hooks)}
        start("k-NN")
        out["knn"] = knn_accuracy(train_x, train_y, test_x, test_y)
        on_fit()
        start("1% low-shot")
        out["low_shot"] = low_shot_probe(train_x, train_y, test_x, test_y, per_class=per_class, **hooks)
        start("RankMe")
        out["rankme"] = rankme(test_x)
        on_fit()
    return {k: out[k] for k in ("linear_probe", "knn", "low_shot", "rankme")}


def evaluate_encoder(
    encoder: nn.Module,
    train_set: Dataset | DataLoader,
    test_set: Dataset | DataLoader,
    *,
    per_class: int = 60,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool = True,
    precision: str = "auto",
) -> dict[str, float]:
    """Extract frozen pooled features of both sets with `encoder` and return `evaluate_features` of them,
    probed on the encoder's device (or `device`)."""
    if device is None:
        device = module_device(encoder)
    kwargs = dict(batch_size=batch_size, device=device, progress=progress, precision=precision)
    train_x, train_y = extract_features(encoder, train_set, **kwargs)
    test_x, test_y = extract_features(encoder, test_set, **kwargs)
    return evaluate_features(
        train_x, train_y, test_x, test_y, per_class=per_class, device=device, progress=progress
    )
