"""Tests for jepa_lite.viz: every plot returns a Figure with the expected panels and data."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from jepa_lite import viz
from jepa_lite.core.masks import sample_masks
from jepa_lite.core.models import sincos_pos_embed


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _masks(b=4, grid=8):
    return sample_masks(b, grid, generator=torch.Generator().manual_seed(0))


def test_label_map_marks_context_and_each_target_block():
    ctx, tgt = _masks()
    labels = viz.mask_label_map(ctx[0], tgt[0], 8)
    assert labels.shape == (8, 8)
    assert (labels == 1).sum() == ctx.shape[1]  # context and targets are disjoint, so none overwritten
    union = torch.zeros(64, dtype=torch.bool)
    union[tgt[0].flatten()] = True
    assert (labels >= 2).sum() == int(union.sum())  # target blocks may overlap each other
    assert (labels == 1 + tgt.shape[1]).sum() == tgt.shape[2]  # the last block is drawn on top, whole
    assert set(np.unique(labels)) <= set(range(2 + tgt.shape[1]))


def test_image_to_display_scales_to_unit_range_and_handles_channels():
    grey = viz.image_to_display(torch.randn(1, 8, 8))
    rgb = viz.image_to_display(torch.randn(3, 8, 8))
    assert grey.shape == (8, 8) and rgb.shape == (8, 8, 3)
    assert grey.min() == pytest.approx(0) and grey.max() == pytest.approx(1)


def test_mask_overlay_and_grid_return_figures():
    ctx, tgt = _masks(6)
    images = torch.randn(6, 1, 32, 32)
    fig = viz.plot_mask_overlay(images[0], ctx[0], tgt[0], 8, title="x")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    # the coloured layer is the label map of these masks, drawn over the whole image
    overlay = fig.axes[0].images[-1]
    np.testing.assert_array_equal(overlay.get_array(), viz.mask_label_map(ctx[0], tgt[0], 8))
    assert overlay.get_extent() == [-0.5, 31.5, 31.5, -0.5]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), viz.image_to_display(images[0]))
    fig = viz.plot_mask_grid(ctx, tgt, 8, images=images, n=5, ncols=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 6  # 2 rows x 3, last one switched off
    assert not fig.axes[-1].axison
    for i in range(5):  # panel i shows row i's masks on row i's image
        np.testing.assert_array_equal(
            fig.axes[i].images[-1].get_array(), viz.mask_label_map(ctx[i], tgt[i], 8)
        )
        np.testing.assert_allclose(fig.axes[i].images[0].get_array(), viz.image_to_display(images[i]))


def test_coverage_uses_a_shared_colour_scale():
    maps = {"a": torch.zeros(4, 4), "b": torch.linspace(0, 1, 16).view(4, 4)}
    fig = viz.plot_coverage(maps)
    ims = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(ims) == 2
    assert all(im.get_clim() == (0.0, 1.0) for im in ims)
    for im, m in zip(ims, maps.values(), strict=True):  # each panel shows its own map, untouched
        np.testing.assert_allclose(im.get_array(), m.numpy())


def test_size_histograms_report_means():
    fig = viz.plot_size_histograms([10, 20, 30], [5, 5, 7], num_patches=64)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "mean 0.312"  # 20 of 64 patches
    assert fig.axes[1].get_legend().get_texts()[0].get_text() == "mean 0.0885"  # 5.67 of 64


def test_patches_figure_has_one_axis_per_token_plus_image():
    image = torch.randn(1, 16, 16)
    fig = viz.plot_patches(image, 4)
    assert len(fig.axes) == 1 + 16
    shown = viz.image_to_display(image)
    for p, ax in enumerate(fig.axes[1:]):  # token p is patch p in raster order: row p // 4, column p % 4
        r, c = divmod(p, 4)
        np.testing.assert_allclose(ax.images[0].get_array(), shown[4 * r : 4 * r + 4, 4 * c : 4 * c + 4])
    with pytest.raises(ValueError, match="patch_size"):
        viz.plot_patches(torch.randn(1, 15, 16), 4)


def test_sincos_positions_plot_checks_the_grid():
    pe = sincos_pos_embed(32, (4, 4))
    fig = viz.plot_sincos_positions(pe, 4)
    assert isinstance(fig, Figure) and len(fig.axes) == 6 + 1 + 3
    with pytest.raises(ValueError, match="positions"):
        viz.plot_sincos_positions(pe, 5)


def test_curves_from_dict_or_rows():
    rows = [{"step": i, "loss": 1.0 / (i + 1), "lr": 0.1 * i} for i in range(5)]
    fig = viz.plot_curves(rows)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "lr"]
    assert fig.axes[0].get_yscale() == "log"
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.1 * i for i in range(5)])
    fig = viz.plot_curves({"loss": [3, 2, 1]}, x=None)
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="no curves"):
        viz.plot_curves({"step": [1, 2]})


def test_mask_panels_one_axis_per_strategy():
    ctx, tgt = _masks(2)
    fig = viz.plot_mask_panels(
        {"a": (ctx[0], tgt[0]), "b": (ctx[1], tgt[1])}, 8, image=torch.randn(3, 32, 32)
    )
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]


def test_nuisance_curves_start_at_the_clean_row_and_leave_out_rows_not_run():
    def row(name, lp, n=2):
        stats = {"linear_probe": {"mean": lp, "std": 0.5}, "knn": {"mean": lp - 5, "std": 0.2}}
        return {"name": name, "n": n, "seeds": 2, **(stats if n else {})}

    rows = [row("I-JEPA, clean", 80.0), row("MAE, clean", 82.0), row("I-JEPA, noise 1.0", 70.0),
            row("MAE, noise 1.0", 60.0), row("I-JEPA, stripes 1.0", 75.0), row("MAE, stripes 1.0", 0, n=0),
            row("I-JEPA, noise 0.5", 74.0)]  # fmt: skip
    fig = viz.plot_nuisance(rows)
    (lp_noise, lp_stripes), (knn_noise, _) = fig.axes[0:2], fig.axes[2:4]
    lines = {ax: {c.get_label(): c.lines[0].get_xydata().tolist() for c in ax.containers}
             for ax in (lp_noise, lp_stripes, knn_noise)}  # fmt: skip
    assert lines[lp_noise]["I-JEPA"] == [[0.0, 80.0], [0.5, 74.0], [1.0, 70.0]]
    assert lines[lp_noise]["MAE"] == [[0.0, 82.0], [1.0, 60.0]]
    assert lines[lp_stripes]["MAE"] == [[0.0, 82.0]]  # its stripes row is not run yet
    assert lines[knn_noise]["I-JEPA"] == [[0.0, 75.0], [0.5, 69.0], [1.0, 65.0]]
    plt.close(fig)
    with pytest.raises(ValueError, match="--groups nuisance"):
        viz.plot_nuisance([row("I-JEPA, clean", 0, n=0)])


def test_spread_labels_pushes_close_labels_apart_and_leaves_far_ones():
    assert viz.spread_labels([1.0, 5.0, 9.0], gap=1.0) == [1.0, 5.0, 9.0]
    heights = viz.spread_labels([87.5, 87.4, 88.4, 87.45], gap=0.4)
    order = np.argsort([87.5, 87.4, 88.4, 87.45], kind="stable")
    assert np.all(np.diff(np.array(heights)[order]) >= 0.4 - 1e-9)  # order kept, every pair legible
    assert heights[2] == 88.4  # far from the cluster 87.05 / 87.45 / 87.85: left where it is
    assert heights[1] == pytest.approx(87.05) and heights[3] == pytest.approx(87.45)
    close = viz.spread_labels([0.0, 0.1], gap=0.5)
    assert close == pytest.approx([-0.2, 0.3])  # centred on the pair's mean height


def test_accuracy_vs_compute_labels_each_curve_end_legibly():
    curves = {
        name: [{"train_minutes": 10.0, "linear_probe": 84.0, "knn": 80.0}, end]
        for name, end in (
            ("I-JEPA", {"train_minutes": 90.0, "linear_probe": 87.5, "knn": 84.3}),
            ("invariant", {"train_minutes": 88.0, "linear_probe": 87.4, "knn": 84.5}),
        )
    }
    fig = viz.plot_accuracy_vs_compute(curves, baselines={"init": {"linear_probe": 80.8, "knn": 58.7}})
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text() in ("87.5", "87.4", "84.3", "84.5")]
        assert len(labels) == 2
        low, high = ax.get_ylim()
        assert abs(labels[0].xyann[1] - labels[1].xyann[1]) >= 0.05 * (high - low) - 1e-9
    plt.close(fig)


def test_accuracy_vs_compute_draws_against_epochs_when_asked():
    curves = {
        "run": [
            {"epochs": 1.0, "linear_probe": 80.0, "knn": 70.0},
            {"epochs": 3.0, "linear_probe": 82.0, "knn": 75.0},
        ]
    }
    fig = viz.plot_accuracy_vs_compute(curves, x="epochs")
    assert list(fig.axes[0].lines[0].get_xdata()) == [1.0, 3.0]
    assert fig.axes[0].get_xlabel() == "epochs of pretraining"
    with pytest.raises(ValueError, match="x 'steps'"):
        viz.plot_accuracy_vs_compute(curves, x="steps")


def test_gap_figure_draws_each_row_and_each_cause_in_its_verdict_colour():
    bars = {
        "I-JEPA": {"linear_probe": (85.5, 0.2), "knn": (80.1, 0.3)},
        "MAE": {"linear_probe": (86.9, 0.1), "knn": (84.2, 0.2)},
    }
    effects = [
        {"cause": "a", "metric": "linear_probe", "effect": 1.5, "noise": 0.5, "verdict": "supported"},
        {"cause": "a", "metric": "knn", "effect": -0.2, "noise": 0.5, "verdict": "within noise"},
        {"cause": "b", "metric": "linear_probe", "effect": -2.0, "noise": 0.5, "verdict": "rejected"},
    ]
    fig = viz.plot_gap(bars, effects)
    left, right = fig.axes[:2]
    heights = sorted(round(p.get_height(), 1) for p in left.patches)
    assert heights == [80.1, 84.2, 85.5, 86.9]
    widths = {round(p.get_width(), 1): p.get_facecolor() for p in right.patches}
    assert set(widths) == {1.5, -0.2, -2.0}
    assert widths[1.5] == matplotlib.colors.to_rgba(viz.results.VERDICT_COLORS["supported"])
    assert widths[-2.0] == matplotlib.colors.to_rgba(viz.results.VERDICT_COLORS["rejected"])
    assert [t.get_text() for t in right.get_yticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="no row"):
        viz.plot_gap({}, effects)


def test_screen_draws_each_row_once_per_metric_with_references_and_the_highlight():
    rows = [
        {"name": "I-JEPA", "n": 2, "linear_probe": {"mean": 84.7, "std": 0.2}, "knn": {"mean": 79.2, "std": 0.1}},
        {"name": "MAE, same time", "n": 2, "linear_probe": {"mean": 86.3, "std": 0.0}, "knn": {"mean": 83.4, "std": 0.0}},
        {"name": "not run", "n": 0},
    ]  # fmt: skip
    fig = viz.plot_screen(rows, references={"raw pixels": {"linear_probe": 84.7, "knn": 85.7}})
    for ax, metric in zip(fig.axes, ("linear_probe", "knn")):
        bars = ax.patches
        assert [b.get_width() for b in bars] == [rows[0][metric]["mean"], rows[1][metric]["mean"]]
        assert bars[0].get_y() > bars[1].get_y()  # the first row on top
        assert bars[0].get_facecolor() != bars[1].get_facecolor()  # MAE highlighted
        assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"] == [
            {"linear_probe": 84.7, "knn": 85.7}[metric]
        ]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["I-JEPA (2)", "MAE, same time (2)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="rows is empty"):
        viz.plot_screen([rows[2]])
