"""The course checkpoints: the loader's errors, a quick retrain end to end, and the shipped files themselves."""

import json
from pathlib import Path

import pytest
import reproduce
import torch

from jepa_lite.core.config import config_from_dict, load_config
from jepa_lite.core.models import Predictor, ViTEncoder
from jepa_lite.lab import pretrained, retrain

HAS_FMNIST = Path("/usr/share/datasets/fashion-mnist").is_dir()
needs_fmnist = pytest.mark.skipif(not HAS_FMNIST, reason="needs Fashion-MNIST (Debian dataset-fashion-mnist)")


def test_unknown_name_lists_the_course_checkpoints():
    with pytest.raises(ValueError, match="unknown course checkpoint 'dino'.*ijepa, mae, invariant"):
        pretrained.load("dino")


def test_unknown_part_lists_the_parts_of_that_method():
    with pytest.raises(ValueError, match="part 'predictor' of 'mae' must be one of: target_encoder, encoder"):
        pretrained.load("mae", part="predictor")


def test_missing_weights_name_the_command_that_trains_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="--groups course_checkpoints --checkpoints invariant"):
        pretrained.load("invariant", root=tmp_path)
    assert pretrained.available(tmp_path) == []


def test_recipes_share_one_encoder_and_differ_in_objective():
    cfgs = {
        n: load_config("fmnist_vit_tiny", [*r.overrides, f"seed={r.seed}"])
        for n, r in pretrained.RECIPES.items()
    }
    assert {c.method.name for c in cfgs.values()} == {"ijepa", "mae", "invariant"}
    encoders = {
        (c.model.depth, c.model.embed_dim, c.model.patch_size, c.optim.global_batch) for c in cfgs.values()
    }
    assert encoders == {(2, 192, 4, 32)}
    assert cfgs["mae"].mask.strategy == "random" and cfgs["mae"].mask.target_ratio == 0.75


def test_snapshot_steps_are_the_budget_fractions():
    assert retrain._snapshot_steps(45_000) == [5625, 11250, 22500, 45000]
    assert retrain._snapshot_steps(3) == [1, 2, 3]  # tiny budgets: never step 0, no duplicates


@needs_fmnist
@pytest.mark.slow
def test_quick_retrain_writes_a_card_and_weights_that_load_strictly(tmp_path):
    cards = retrain.retrain(
        ["ijepa"], out_dir=tmp_path, work_dir=tmp_path / "work", quick=True, progress=False
    )
    info = cards["ijepa"]
    assert pretrained.available(tmp_path) == ["ijepa"]
    assert json.loads((tmp_path / "ijepa.json").read_text()) == json.loads(json.dumps(info))
    assert [s["step"] for s in info["snapshots"]] == [1, 2, 3]
    assert info["steps"] == 3 and info["probes_float32"] == info["snapshots"][-1]
    assert [s for s, _ in info["loss_curve"]] == [0, 1, 2]  # one point per step of a 3-step run
    # compute is steps x the median step time, so a paused or crowded stretch of the run does not count
    median = info["step_seconds_median"]
    assert median > 0 and all(
        abs(s["train_minutes"] - s["step"] * median / 60) < 0.006 for s in info["snapshots"]
    )
    assert info["command"].endswith("--checkpoints ijepa") and "seed=0" in info["pretrain_command"]
    enc = pretrained.load("ijepa", root=tmp_path)
    pred = pretrained.load("ijepa", part="predictor", root=tmp_path)
    assert isinstance(enc, ViTEncoder) and isinstance(pred, Predictor) and not enc.training
    assert enc.pos_embed.dtype == torch.float32  # float16 files come back as float32 modules
    # the loaded encoder is the one whose k-NN check was recorded
    knn = retrain.knn_check(enc, config_from_dict(info["config"]), quick=True)
    assert knn == info["knn_check"]["knn"]
    # the file is the one it claims: a changed weight is a different encoder
    target = pretrained.load("ijepa", part="method", root=tmp_path).target_encoder
    assert torch.equal(target.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)


@needs_fmnist
@pytest.mark.slow
@pytest.mark.parametrize("name", pretrained.names())
def test_shipped_checkpoint_reproduces_its_recorded_knn(name):
    """A wrong, damaged or stale file fails here: its k-NN on the fixed 2,000 test images must match its card."""
    if name not in pretrained.available():
        pytest.skip(
            f"{name} is not shipped in this checkout (train it: {pretrained.COMMAND.format(name=name)})"
        )
    info = pretrained.card(name)
    enc = pretrained.load(name)
    assert info["knn_check"]["test"] == retrain.KNN_CHECK["test"]
    knn = retrain.knn_check(enc, config_from_dict(info["config"]))
    assert abs(knn - info["knn_check"]["knn"]) <= 0.5, (name, knn, info["knn_check"])


def test_compute_curves_put_every_method_on_the_side_by_side_clock(tmp_path):
    """Each card's own minutes depend on what else its host ran; measured step times replace them."""
    snaps = [
        {"step": 100, "train_minutes": 9.0, "knn": 70.0},
        {"step": 400, "train_minutes": 50.0, "knn": 75.0},
    ]
    for name, method in (("ijepa", "ijepa"), ("mae", "mae")):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"method": method, "snapshots": snaps, "trained_on": "CPU, 2 threads"})
        )
    own, title = pretrained.compute_curves(tmp_path)
    assert [p["train_minutes"] for p in own["I-JEPA"]] == [9.0, 50.0] and "side by side" not in title
    clock, title = pretrained.compute_curves(tmp_path, seconds_per_step={"ijepa": 0.12, "mae": 0.06})
    assert [p["train_minutes"] for p in clock["I-JEPA"]] == pytest.approx([0.2, 0.8])
    assert [p["train_minutes"] for p in clock["MAE"]] == pytest.approx([0.1, 0.4])
    assert [p["knn"] for p in clock["MAE"]] == [70.0, 75.0] and "timed side by side" in title
    # by default the clock is the timing file beside the weights, as `reproduce.py` writes it
    (tmp_path / pretrained.STEP_SECONDS).write_text(json.dumps({"seconds_per_step": {"ijepa": 0.3}}))
    beside, _ = pretrained.compute_curves(tmp_path)
    assert [p["train_minutes"] for p in beside["I-JEPA"]] == pytest.approx([0.5, 2.0])
    assert [p["train_minutes"] for p in beside["MAE"]] == [9.0, 50.0]  # not timed: its card's own minutes


def test_step_seconds_needs_timed_steps():
    with pytest.raises(ValueError, match="must exceed warmup"):
        retrain.step_seconds(["mae"], steps=10, warmup=10)
    with pytest.raises(ValueError, match="unknown course checkpoint 'vit'"):
        retrain.step_seconds(["vit"], steps=3, warmup=1)


def test_step_seconds_times_each_recipe_as_it_is_trained(monkeypatch):
    """The side-by-side clock times exactly the recipes' overrides and seeds on the course default, in the
    order asked (the timing itself runs in the slow reproduce test below)."""
    calls = []
    monkeypatch.setattr(retrain, "step_seconds_of", lambda rows, **kw: calls.append((rows, kw)) or {})
    retrain.step_seconds(["mae", "ijepa"], steps=6, warmup=2)
    rows, kw = calls[0]
    assert list(rows) == ["mae", "ijepa"]
    assert rows["mae"] == (pretrained.RECIPES["mae"].overrides, 0) and "method.name=mae" in rows["mae"][0]
    assert kw == dict(base=pretrained.BASE, steps=6, warmup=2, quick=False)


@needs_fmnist
@pytest.mark.slow
def test_reproduce_course_checkpoints_draws_every_method_on_one_clock(tmp_path):
    """`reproduce.py --groups course_checkpoints --quick`: cards, the side-by-side step times, the figure."""
    cards = reproduce.main(["--groups", "course_checkpoints", "--checkpoints", "mae,ijepa", "--quick",
                            "--quiet", "--out", str(tmp_path)])  # fmt: skip
    weights = tmp_path / "checkpoints"
    assert sorted(cards) == ["ijepa", "mae"] == pretrained.available(weights)
    timing = json.loads((weights / pretrained.STEP_SECONDS).read_text())["seconds_per_step"]
    assert sorted(timing) == sorted(pretrained.RECIPES) and all(s > 0 for s in timing.values())
    curves, _ = pretrained.compute_curves(weights)
    for name, label in (("ijepa", "I-JEPA"), ("mae", "MAE")):
        assert curves[label][-1]["train_minutes"] == pytest.approx(cards[name]["steps"] * timing[name] / 60)
    assert (tmp_path / "accuracy_vs_compute.png").stat().st_size > 10_000


def test_loading_a_checkpoint_imports_no_training_code():
    """`pretrained.load` is what every notebook calls: it builds the modules and reads the weights, and never
    imports the training loop, the grid, the experiments, the retraining code or the cluster machinery."""
    import subprocess
    import sys

    code = ("import sys; from jepa_lite.lab import pretrained; pretrained.load('ijepa', root=sys.argv[1]) "
            "if pretrained.available(sys.argv[1]) else None; print(' '.join(sorted(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(pretrained.WEIGHTS_DIR)], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert "jepa_lite.lab.pretrained" in out and "jepa_lite.core.models" in out
    training = {
        "jepa_lite.core.train",
        "jepa_lite.lab.grid",
        "jepa_lite.lab.experiments",
        "jepa_lite.lab.retrain",
    }
    assert training.isdisjoint(out)
    assert [m for m in out if m.startswith("jepa_lite.cluster")] == []


def test_a_new_recipe_joins_the_recorded_clock_by_its_ratio_to_ijepa(monkeypatch):
    """A recipe timed on another day than the others would not share their clock: it is timed beside I-JEPA
    and gets I-JEPA's recorded step time times the ratio measured now."""
    recorded = {"seconds_per_step": {"ijepa": 0.12, "mae": 0.06}, "device": "CPU, 2 threads"}
    asked = []
    monkeypatch.setattr(
        retrain,
        "step_seconds",
        lambda which, **kw: asked.append(which) or {"ijepa": 0.2, "mae": 0.5, "x": 0.1},
    )
    out = retrain.extend_step_seconds(recorded, ["x"], steps=6, warmup=2)
    assert asked == [["ijepa", "x"]]
    assert out["seconds_per_step"] == pytest.approx({"ijepa": 0.12, "mae": 0.06, "x": 0.06})
    assert out["scaled"]["x"].startswith("0.500 x ijepa's step") and "scaled" not in recorded


def test_every_recipe_has_a_label_and_the_labels_differ():
    labels = [pretrained.label(n) for n in pretrained.RECIPES]
    assert labels[:3] == ["I-JEPA", "MAE", "Invariant (InfoNCE)"] and len(set(labels)) == len(labels)
