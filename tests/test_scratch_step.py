"""Notebook 05 writes one I-JEPA step from scratch in plain PyTorch: it must equal `IJEPA.forward` (loss and
every gradient) and `ema_update`, on masks of every shape the course uses. The functions are read from the
notebook itself, so the test checks the code a learner reads."""

import copy
import json
from pathlib import Path

import pytest
import torch

from jepa_lite.core.build import build_collator, build_method
from jepa_lite.core.config import load_config
from jepa_lite.core.ema import ema_update

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_train_ijepa.ipynb"


@pytest.fixture(scope="module")
def scratch() -> dict:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    (source,) = ["".join(c["source"]) for c in cells if "def ijepa_loss_from_scratch" in "".join(c["source"])]
    namespace = {"torch": torch}
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace


def _model_and_batch(overrides: list[str], seed: int = 0):
    cfg = load_config(
        overrides=["model.embed_dim=48", "model.num_heads=3", "model.predictor_dim=24", *overrides]
    )
    torch.manual_seed(seed)
    model = build_method(cfg, in_chans=1)
    with torch.no_grad():  # a target encoder that differs from the context encoder, as after training
        for p in model.target_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(8, 1, 28, 28)
    batch = build_collator(cfg, model.context_encoder.grid)([(img, 0) for img in images])
    return model, batch


@pytest.mark.parametrize(
    "overrides", [[], ["mask.n_targets=1"], ["model.predictor_depth=1", "mask.target_scale=[0.25,0.3]"]]
)
def test_scratch_step_equals_ijepa_forward_loss_and_gradients(scratch, overrides):
    model, batch = _model_and_batch(overrides)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_lib, _ = model(batch)
    grads_lib = torch.autograd.grad(loss_lib, params)
    loss = scratch["ijepa_loss_from_scratch"](model, batch.images, batch.context_idx, batch.target_idx)
    grads = torch.autograd.grad(loss, params)
    torch.testing.assert_close(loss, loss_lib)
    for g, g_lib in zip(grads, grads_lib, strict=True):
        torch.testing.assert_close(g, g_lib)
    assert all(p.grad is None for p in model.target_encoder.parameters()), "no gradient into the target"


def test_scratch_step_sees_a_wrong_target(scratch):
    """The equality is not vacuous: with another target encoder the from-scratch loss differs."""
    model, batch = _model_and_batch([])
    loss_lib, _ = model(batch)
    with torch.no_grad():
        for p in model.target_encoder.parameters():
            p.mul_(1.5)
    loss = scratch["ijepa_loss_from_scratch"](model, batch.images, batch.context_idx, batch.target_idx)
    assert abs(loss.item() - loss_lib.item()) > 1e-4


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.996, 1.0])
def test_scratch_ema_equals_ema_update(scratch, momentum):
    model, _ = _model_and_batch([])
    mine, lib = model.target_encoder, copy.deepcopy(model.target_encoder)
    scratch["ema_from_scratch"](mine, model.context_encoder, momentum)
    ema_update(lib, model.context_encoder, momentum)
    for a, b in zip(mine.parameters(), lib.parameters(), strict=True):
        torch.testing.assert_close(a, b)
