"""Tests for jepa_lite.widgets: the pure explorer function, and the slider wiring of the widget."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from jepa_lite.masks import block_size
from jepa_lite.widgets import format_stats, mask_explorer, mask_explorer_data


def test_explorer_data_default_statistics():
    d = mask_explorer_data(8, batch_size=64, seed=0)
    assert d["error"] is None
    B, M, kt = d["target_idx"].shape
    assert (B, M) == (64, 4) and d["context_idx"].shape == (64, d["context_len"])
    assert d["block_h"] * d["block_w"] == kt == d["target_len"]
    assert d["coverage"].shape == (8, 8)
    assert 0 < d["context_fraction"] < 1 and 0 < d["target_fraction"] < 1
    # the coverage map is the mean context membership, so it sums to Kc
    assert float(d["coverage"].sum()) == pytest.approx(d["context_len"], rel=1e-5)


def test_explorer_data_block_size_matches_geometry_for_fixed_scale():
    d = mask_explorer_data(10, target_scale=(0.2, 0.2), target_aspect=(1.0, 1.0), batch_size=8)
    assert (d["block_h"], d["block_w"]) == block_size(0.2, 1.0, 10)


def test_explorer_data_is_deterministic_given_seed():
    a, b = mask_explorer_data(8, seed=3), mask_explorer_data(8, seed=3)
    assert torch.equal(a["context_idx"], b["context_idx"]) and torch.equal(a["target_idx"], b["target_idx"])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target_scale=(0.3, 0.1)),
        dict(target_aspect=(0.0, 1.0)),
        dict(n_targets=0),
        dict(context_scale=(0.5, 1.2)),
        dict(grid=1),
        dict(batch_size=0),
    ],
)
def test_invalid_settings_give_a_message_not_an_exception(kwargs):
    kwargs = dict(kwargs)
    grid = kwargs.pop("grid", 8)
    d = mask_explorer_data(grid, **kwargs)
    assert d["error"] and d["context_idx"] is None
    assert format_stats(d).startswith("Invalid setting")


def test_impossible_context_is_reported_readably():
    d = mask_explorer_data(2, n_targets=4)
    assert "RuntimeError" in d["error"] and "min_context" in d["error"]


def test_widget_renders_default_once_headless():
    w = mask_explorer(batch_size=32)
    assert w.result["error"] is None and w.result["target_idx"].shape[1] == 4
    assert all(getattr(c, "continuous_update", False) is False for c in w.children[:-1])
    assert "stats" not in format_stats(w.result)


def test_setting_sliders_changes_the_result():
    images = torch.randn(4, 1, 32, 32)
    w = mask_explorer(images, batch_size=32)
    ts, ta, nt, cs, grid = w.children[:5]
    base = w.result["target_len"]
    ts.value = (0.3, 0.35)
    assert w.result["target_len"] > base
    nt.value = 2
    assert w.result["target_idx"].shape[1] == 2
    grid.value = 12
    assert w.result["grid"] == (12, 12) and w.result["coverage"].shape == (12, 12)
    kc = w.result["context_len"]
    cs.value = (0.4, 0.45)
    assert w.result["context_len"] < kc
    ta.value = (3.0, 3.5)  # tall blocks
    assert w.result["block_h"] > w.result["block_w"]
    grid.value = 2  # impossible: message, no exception
    assert w.result["error"] is not None
