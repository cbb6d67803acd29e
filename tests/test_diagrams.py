import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

from jepa_lite.core.masks import sample_masks  # noqa: E402
from jepa_lite.diagrams import plot_ijepa_architecture  # noqa: E402


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_architecture_names_the_three_networks_the_ema_rule_and_the_stop_gradient():
    text = _texts(plot_ijepa_architecture())
    for part in ("context encoder", "predictor", "target encoder", "EMA", "θ̄ ← m·θ̄ + (1 − m)·θ", "stop-gradient",
                 "mask tokens", "smooth-L1", "[B, Kc, D]"):  # fmt: skip
        assert part in text, part


def test_architecture_draws_the_given_image_with_its_masks():
    ctx, tgt = sample_masks(1, 7, generator=torch.Generator().manual_seed(0))
    fig = plot_ijepa_architecture(torch.randn(1, 28, 28), ctx[0], tgt[0], 7)
    inset = fig.axes[1]
    labels = inset.images[-1].get_array()  # the label map over the patch grid: context, targets, rest
    assert labels.shape == (7, 7) and len({int(v) for v in labels.ravel()}) >= 3
    with pytest.raises(ValueError, match="context_idx, target_idx and grid"):
        plot_ijepa_architecture(torch.randn(1, 28, 28))


def test_the_readme_diagram_script_draws_a_real_image(tmp_path):
    import importlib.util
    from pathlib import Path

    from matplotlib.image import imread

    script = Path(__file__).resolve().parents[1] / "scripts" / "draw_diagram.py"
    spec = importlib.util.spec_from_file_location("draw_diagram", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        out = module.main(["--out", str(tmp_path / "step.png")])
    except FileNotFoundError:
        pytest.skip("needs Fashion-MNIST (Debian dataset-fashion-mnist)")
    pixels = imread(out)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 800 and pixels.std() > 0.05  # a drawing, not a blank
