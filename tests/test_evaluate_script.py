"""Tests for scripts/evaluate.py on a tiny run folder (ShapesWorld: generated, no download)."""

import json
from pathlib import Path

import pytest
import torch

from jepa_lite.core.build import build_encoder
from jepa_lite.core.config import config_to_dict, load_config
from jepa_lite.core.evaluate import PROBE_VERSION
from jepa_lite.core.models import Predictor
from jepa_lite.core.weights import export_weights
from jepa_lite.interop import export_official

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as scripts/pretrain.py writes it, with a tiny random ViT on 32-px ShapesWorld images."""
    overrides = ["data.name=shapes", "data.image_size=32", "model.name=null", "model.patch_size=8",
                 "model.embed_dim=64", "model.depth=1", "model.num_heads=1"]  # fmt: skip
    cfg = load_config("fmnist_vit_tiny", overrides)
    torch.manual_seed(0)
    for name in ("target_encoder", "encoder"):
        export_weights(build_encoder(cfg, in_chans=3), tmp_path / f"{name}.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    return tmp_path


def test_evaluate_run_folder(evaluate_script, run_dir, capsys):
    out = run_dir / "results.json"
    args = [str(run_dir), "--train-limit", "120", "--test-limit", "40", "--quiet", "--json", str(out)]
    res = evaluate_script.main(args)
    for key in ("linear_probe", "knn", "low_shot"):
        assert 0.0 <= res[key] <= 100.0
    assert 1.0 <= res["rankme"] <= 64.0
    assert res["dataset"] == "shapes" and res["image_size"] == 32 and res["train_images"] == 120
    assert res["per_class"] <= 60  # clamped to the rarest class of 120 images
    saved = json.loads(out.read_text())
    assert saved["knn"] == res["knn"] and saved["probe_version"] == PROBE_VERSION
    printed = capsys.readouterr().out
    assert "linear_probe" in printed and "rankme" in printed


def test_evaluate_official_file_other_size(evaluate_script, run_dir, tmp_path):
    """An official .pth.tar of the same encoder, probed at 48 px (positions interpolated to a 6x6 grid)."""
    from jepa_lite.interop import load_encoder

    enc = load_encoder(run_dir)
    pred = Predictor(enc.grid, enc.embed_dim, predictor_dim=16, depth=1, num_heads=1)
    ckpt = export_official(enc, pred, enc, tmp_path / "official.pth.tar")
    res = evaluate_script.main([str(ckpt), "--dataset", "shapes", "--image-size", "48", "--which", "context",
                       "--train-limit", "60", "--test-limit", "30", "--per-class", "5", "--quiet"])  # fmt: skip
    assert res["image_size"] == 48 and res["per_class"] == 5 and 0.0 <= res["linear_probe"] <= 100.0


def test_evaluate_bad_path(evaluate_script, tmp_path, capsys):
    with pytest.raises(
        SystemExit
    ) as exit_info:  # one line naming the path, exit status 2 (tests/test_cli.py)
        evaluate_script.main([str(tmp_path / "nope"), "--quiet"])
    assert (
        exit_info.value.code == 2
        and f"{tmp_path / 'nope'} is neither a file nor a folder" in capsys.readouterr().err
    )


def test_image_folder_limits_take_every_class(evaluate_script, tmp_path):
    """ImageFolder lists images class by class: a limit must draw from every class, not the first ones."""
    from PIL import Image

    from jepa_lite.core.models import ViTEncoder
    from jepa_lite.data import build_dataset
    from jepa_lite.interop import export_hf

    gen = torch.Generator().manual_seed(0)
    for c in ("cat", "dog", "eel"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            pixels = (torch.rand(16, 16, 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "imgs" / c / f"{i}.png")
    folder = build_dataset("imagefolder", root=tmp_path / "imgs", train=False, image_size=16)
    picked = evaluate_script.balanced_subset(folder, 6)
    assert sorted(folder.targets[i] for i in picked.indices) == [0, 0, 1, 1, 2, 2]
    torch.manual_seed(0)
    export_hf(ViTEncoder(img_size=16, patch_size=4, embed_dim=64, depth=1, num_heads=1), tmp_path / "hf")
    res = evaluate_script.main([str(tmp_path / "hf"), "--dataset", "imagefolder", "--data", str(tmp_path / "imgs"),
                       "--train-limit", "21", "--test-limit", "3", "--per-class", "1", "--quiet"])  # fmt: skip
    assert res["image_size"] == 16 and res["train_images"] == 21 and res["test_images"] == 3
