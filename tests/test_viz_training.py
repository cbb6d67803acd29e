"""Tests for the training, EMA and collapse plots of notebooks 03-05 (jepa_lite.viz) and the EMA explorer
widget (jepa_lite.widgets): the pure functions exactly, the figures by their panels and data."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from jepa_lite import viz
from jepa_lite.core.ema import ema_trace
from jepa_lite.lab.tables import markdown_table
from jepa_lite.widgets import ema_explorer, ema_explorer_data, format_ema_stats


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------------------
# pure helpers


def test_hide_patches_keeps_listed_patches_and_fills_the_rest():
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    keep = torch.tensor([[0, 3], [1, 2]])  # 2x2 grid of 4-px patches
    out = viz.hide_patches(images, keep, patch_size=4, fill=-1.0)
    assert out.shape == images.shape
    torch.testing.assert_close(out[0, :, :4, :4], images[0, :, :4, :4])  # patch 0 kept
    torch.testing.assert_close(out[0, :, 4:, 4:], images[0, :, 4:, 4:])  # patch 3 kept
    assert torch.all(out[0, :, :4, 4:] == -1) and torch.all(out[0, :, 4:, :4] == -1)
    torch.testing.assert_close(out[1, :, :4, 4:], images[1, :, :4, 4:])  # patch 1 kept
    assert torch.all(out[1, :, :4, :4] == -1)
    default = viz.hide_patches(images, keep, patch_size=4)  # mid grey between the batch's min and max
    assert torch.all(default[0, :, :4, 4:] == (images.min() + images.max()) / 2)
    with pytest.raises(ValueError, match="patch_size=3"):
        viz.hide_patches(images, keep, patch_size=3)


def test_ema_trace_follows_the_ema_rule():
    x = torch.tensor([0.0, 1.0, 1.0, 1.0])
    torch.testing.assert_close(ema_trace(x, 0.5), torch.tensor([0.0, 0.5, 0.75, 0.875]))
    torch.testing.assert_close(ema_trace(x, 0.0), x)  # m = 0 copies the signal
    torch.testing.assert_close(ema_trace(x, 1.0), torch.zeros(4))  # m = 1 freezes the first value
    step = ema_trace(torch.ones(50), [0.9] * 50)  # a per-step schedule works too
    torch.testing.assert_close(step, torch.ones(50))
    with pytest.raises(ValueError, match="momentum schedule has 3 values"):
        ema_trace(x, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        ema_trace(x, 1.5)


def test_markdown_table_formats_cells():
    text = markdown_table([{"a": True, "b": 0.123456, "c": 12345}, {"a": False, "b": 2.0, "c": None}])
    lines = text.splitlines()
    assert lines[0] == "| a | b | c |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| yes | 0.123 | 12,345 |"
    assert lines[3] == "| no | 2 |  |"
    assert markdown_table([{"x": 1, "y": 2}], columns=["y"]).splitlines()[2] == "| 2 |"
    with pytest.raises(ValueError, match="rows is empty"):
        markdown_table([])


# ---------------------------------------------------------------------------------------------------------
# figures


def test_plot_image_rows_draws_one_axis_per_image_and_row_labels():
    rows = {"image": torch.randn(6, 1, 8, 8), "view": torch.randn(6, 1, 8, 8), "rgb": torch.randn(6, 3, 8, 8)}
    fig = viz.plot_image_rows(rows, n=4, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 12
    assert [fig.axes[4 * r].get_ylabel() for r in range(3)] == ["image", "view", "rgb"]
    with pytest.raises(ValueError, match="rows is empty"):
        viz.plot_image_rows({})


def test_plot_energy_shares_one_colour_scale_and_draws_thumbnails():
    e = torch.rand(5, 5)
    fig = viz.plot_energy(
        {"a": e, "b": torch.zeros(5, 5)}, x_images=torch.randn(5, 1, 8, 4), y_images=torch.randn(5, 1, 8, 4)
    )
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 2 and len(fig.axes) == 3  # two heatmaps and the colour bar
    assert heat[0].images[0].get_clim() == heat[1].images[0].get_clim() == (0, pytest.approx(float(e.max())))
    assert len(heat[0].artists) == 10  # 5 row thumbnails and 5 column thumbnails
    np.testing.assert_allclose(heat[0].images[0].get_array(), e.numpy())
    with pytest.raises(ValueError, match="2-D energy matrices"):
        viz.plot_energy({"a": torch.zeros(3)})


def test_plot_step_costs_bars_match_the_costs():
    fig = viz.plot_step_costs({"invariant": 30.0, "mae": 10.0, "ijepa": 20.0})
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths == [30.0, 10.0, 20.0]


def test_plot_ema_trace_draws_signal_trend_and_traces():
    d = ema_explorer_data(0.9, n_steps=200)
    fig = viz.plot_ema_trace(d["signal"], {"a": d["ema"], "b": d["ema"] * 0}, clean=d["clean"])
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    np.testing.assert_allclose(lines[2].get_ydata(), d["ema"].numpy())


def _curves():
    steps = list(range(0, 50, 10))
    return {
        "ema": {"step": steps, "loss": [0.5, 0.4, 0.3, 0.3, 0.3], "rankme": [4, 4, 4, 4, 4],
                "feature_std": [0.03] * 5},
        "online": {"step": steps, "loss": [0.5, 0.1, 0.01, 1e-3, 1e-4], "rankme": [4, 2, 1.2, 1.1, 1.0],
                   "feature_std": [0.03, 0.01, 1e-3, 1e-3, 1e-3]},
    }  # fmt: skip


def test_plot_collapse_lab_has_one_panel_per_metric_and_one_line_per_run():
    fig = viz.plot_collapse_lab(_curves(), styles={"online": dict(ls="--")})
    axes = fig.axes
    assert len(axes) == 3
    assert [ax.get_yscale() for ax in axes] == ["log", "linear", "log"]
    assert all(len(ax.get_lines()) == 2 for ax in axes)
    np.testing.assert_allclose(axes[1].get_lines()[1].get_ydata(), [4, 2, 1.2, 1.1, 1.0])
    assert axes[0].get_lines()[1].get_linestyle() == "--"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ema", "online"]
    with pytest.raises(ValueError, match="curves is empty"):
        viz.plot_collapse_lab({})


def test_plot_training_curves_smooths_the_loss_and_draws_schedules():
    history = [{"step": s, "loss": 1.0 / (s + 1), "lr": 1e-3, "wd": 0.04 + s * 1e-3, "momentum": 0.996}
               for s in range(200)]  # fmt: skip
    fig = viz.plot_training_curves(history)
    assert len(fig.axes) == 4
    loss_lines = fig.axes[0].get_lines()
    assert len(loss_lines) == 2  # raw and smoothed
    m = 1 - 1 / 5  # auto window: 200 steps / 40
    np.testing.assert_allclose(
        loss_lines[1].get_ydata(), ema_trace([r["loss"] for r in history], m), rtol=1e-6
    )
    np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(), [r["wd"] for r in history])
    assert len(viz.plot_training_curves(history[:10]).axes[0].get_lines()) == 1  # too short to smooth
    with pytest.raises(ValueError, match="history is empty"):
        viz.plot_training_curves([])


def test_plot_probe_bars_one_bar_per_encoder_and_metric():
    results = {"trained": {"linear_probe": 80.0, "knn": 75.0, "low_shot": 70.0},
               "init": {"linear_probe": 60.0, "knn": 50.0, "low_shot": 55.0}}  # fmt: skip
    fig = viz.plot_probe_bars(results, chance=10.0)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [80.0, 75.0, 70.0, 60.0, 50.0, 55.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["linear probe", "k-NN", "1% low-shot"]
    with pytest.raises(ValueError, match="results is empty"):
        viz.plot_probe_bars({})


# ---------------------------------------------------------------------------------------------------------
# the EMA explorer widget


@pytest.mark.parametrize("m", [0.5, 0.9, 0.99, 0.996])
def test_ema_lag_behind_a_jump_is_the_averaging_window(m):
    d = ema_explorer_data(m)
    assert d["lag"] == math.ceil(-1 / math.log(m))  # first k with 1 - m^k >= 1 - 1/e
    assert d["window"] == pytest.approx(1 / (1 - m))
    assert abs(d["lag"] - d["window"]) <= 1


def test_ema_explorer_data_extremes_and_noise():
    frozen = ema_explorer_data(1.0)
    assert frozen["lag"] is None and math.isinf(frozen["window"]) and "never" in format_ema_stats(frozen)
    copy = ema_explorer_data(0.0)
    torch.testing.assert_close(copy["ema"], copy["signal"])
    assert ema_explorer_data(0.9, noise=0.0)["noise_left"] == 0.0
    assert ema_explorer_data(0.99)["noise_left"] < ema_explorer_data(0.5)["noise_left"]
    a, b = ema_explorer_data(0.9, seed=3), ema_explorer_data(0.9, seed=3)
    assert torch.equal(a["signal"], b["signal"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(momentum=1.2), "momentum 1.2"),
        (dict(noise=-1.0), "noise -1.0"),
        (dict(jump_at=600), "jump_at 600"),
    ],
)
def test_ema_explorer_data_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ema_explorer_data(**kwargs)


def test_ema_explorer_renders_default_once_headless():
    w = ema_explorer()
    assert w.result["momentum"] == 0.9 and w.result["lag"] == 10
    assert all(c.continuous_update is False for c in w.children[:2])
    assert w.children[-1].layout.height == "560px"


def test_ema_explorer_sliders_change_the_result():
    w = ema_explorer(n_steps=400)
    momentum, noise = w.children[:2]
    ema_before = w.result["ema"].clone()
    momentum.value = 0.99
    assert w.result["momentum"] == 0.99 and w.result["lag"] == 100
    assert not torch.equal(w.result["ema"], ema_before)
    noise.value = 0.0
    assert w.result["noise"] == 0.0 and w.result["noise_left"] == 0.0
