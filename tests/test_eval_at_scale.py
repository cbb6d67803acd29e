"""Evaluation at cluster scale: the paper's protocols as configs, features extracted by several processes into
one resumable store, and a mini-batch probe that agrees with the course's converged L-BFGS probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from accelerate import Accelerator

from jepa_lite.cluster import feature_store
from jepa_lite.cluster.feature_store import extract_to_store, open_store
from jepa_lite.cluster.protocol_eval import split_file_indices
from jepa_lite.cluster.protocols import load_protocol
from jepa_lite.cluster.sgd_probe import lr_at, sgd_linear_probe
from jepa_lite.core.build import build_encoder
from jepa_lite.core.config import config_to_dict, load_config
from jepa_lite.core.evaluate import WEIGHT_DECAYS, linear_probe
from jepa_lite.core.weights import export_weights
from jepa_lite.data import build_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "evaluate.py"
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SIZE = ("ant", "bee", "cow"), 10, 4, 16

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """An ImageNet-style folder root/{train,val}/CLASS/*.png of 16-px images, one colour per class + noise."""
    from PIL import Image

    root, gen = tmp_path_factory.mktemp("imagenet"), torch.Generator().manual_seed(0)
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = torch.rand(SIZE, SIZE, 3, generator=gen) * 80
                pixels[..., c] += 150
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(root / split / name / f"{name}_{i}.png")
    return root


def _run_folder(path: Path) -> Path:
    """A run folder as scripts/pretrain.py writes it, with a tiny random RGB ViT at 16 px."""
    overrides = ["data.name=imagefolder", f"data.image_size={SIZE}", "model.name=null", "model.patch_size=4",
                 "model.embed_dim=32", "model.depth=1", "model.num_heads=2"]  # fmt: skip
    cfg = load_config("fmnist_vit_tiny", overrides)
    torch.manual_seed(0)
    path.mkdir(parents=True)
    for name in ("target_encoder", "encoder"):
        export_weights(build_encoder(cfg, in_chans=3), path / f"{name}.safetensors")
    (path / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    return path


def _tiny_protocol(tmp_path: Path, **changes) -> Path:
    d = yaml.safe_load((ROOT / "jepa_lite/configs/eval/in1k_linear.yaml").read_text())
    d.update(name="tiny_linear", image_size=SIZE, optimizer="sgd", batch_size=8, epochs=20, schedule="cosine",
             lr=[0.1], weight_decay=[0.0], **changes)  # fmt: skip
    path = tmp_path / "tiny_linear.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


# ----------------------------------------------------------------------------------------------------------
# the protocols, value by value


def test_in1k_linear_is_the_papers_protocol():
    p = load_protocol("in1k_linear")
    assert (p.which, p.pooling, p.image_size, p.train_split, p.per_class) == (
        "target",
        "avg_last",
        224,
        "train",
        None,
    )
    assert (p.probe, p.optimizer, p.batch_size, p.epochs) == ("sgd", "lars", 16384, 50)  # A.2
    assert (p.schedule, p.decay_epochs) == (
        "step",
        15,
    )  # A.2: "dividing it by a factor of 10 every 15 epochs"
    assert p.lr == (0.01, 0.05, 0.001) and p.weight_decay == (0.0005, 0.0)  # A.2's sweep


def test_in1k_1pct_is_the_frozen_low_shot_protocol():
    p = load_protocol("in1k_1pct")
    assert (p.which, p.pooling, p.image_size, p.per_class, p.split_file) == (
        "target",
        "avg_last",
        224,
        13,
        None,
    )
    assert p.probe == "lbfgs" and p.weight_decay == WEIGHT_DECAYS  # the course's probe and its L2 choices


def test_a_protocol_file_with_a_missing_or_unknown_key_is_refused(tmp_path):
    d = yaml.safe_load((ROOT / "jepa_lite/configs/eval/in1k_linear.yaml").read_text())
    d.pop("epochs")
    d["epoch"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"missing keys \['epochs'\], unknown keys \['epoch'\]"):
        load_protocol(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------------------------------------
# the feature store


def _store(images: Path, tmp_path: Path, name: str, **kw) -> Path:
    overrides = ["model.name=null", "model.patch_size=4", "model.embed_dim=32", "model.depth=1",
                 "model.num_heads=2", f"data.image_size={SIZE}"]  # fmt: skip
    torch.manual_seed(0)
    encoder = build_encoder(load_config("fmnist_vit_tiny", overrides), in_chans=3)
    dataset = build_dataset("imagefolder", root=images, train=True, image_size=SIZE, crop_scale=None)
    return extract_to_store(encoder, dataset, tmp_path / name, accelerator=Accelerator(cpu=True),
                            request={"weights": "w0"}, chunk=7, batch_size=4, progress=False, **kw)  # fmt: skip


def test_a_resumed_extraction_equals_an_uninterrupted_one(images, tmp_path, monkeypatch):
    whole = _store(images, tmp_path, "whole")
    write, written = feature_store._write_rows, []

    def dies_after_two_chunks(path, array, first_row):
        if len(written) == 4:  # two chunks' features and labels written: the job is preempted
            raise KeyboardInterrupt
        written.append(first_row)
        write(path, array, first_row)

    monkeypatch.setattr(feature_store, "_write_rows", dies_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        _store(images, tmp_path, "resumed")
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    written.clear()
    monkeypatch.setattr(feature_store, "_write_rows", lambda *a: (written.append(a[2]), write(*a)))
    resumed = _store(images, tmp_path, "resumed")
    assert sorted(set(written)) == [14, 21, 28]  # only the three chunks not finished before the stop
    for name in feature_store.FILES:
        assert (whole / name).read_bytes() == (resumed / name).read_bytes()
    feats, labels, manifest = open_store(resumed, verify=True)
    assert feats.shape == (30, 32) and labels.tolist() == sorted(labels.tolist()) and np.abs(feats).min() > 0
    assert manifest["request"]["images"] == 30


def test_a_store_refuses_other_weights_and_reports_a_changed_file(images, tmp_path):
    _store(images, tmp_path, "s")
    encoder = torch.nn.Identity()
    with pytest.raises(ValueError, match="was started for other inputs \\(weights differ\\)"):
        extract_to_store(encoder, range(30), tmp_path / "s", accelerator=Accelerator(cpu=True),
                         request={"weights": "other"}, chunk=7)  # fmt: skip
    with open(tmp_path / "s" / "features.npy", "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(ValueError, match="features.npy changed after it was written"):
        open_store(tmp_path / "s")


# ----------------------------------------------------------------------------------------------------------
# the probe that scales


def test_the_sgd_probe_agrees_with_the_converged_lbfgs_probe():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 24, generator=gen) * 0.5  # overlapping classes: about 88% separable
    y = torch.arange(4).repeat_interleave(150)
    x = centres[y] + torch.randn(600, 24, generator=gen)
    train, test = torch.arange(600) % 3 != 0, torch.arange(600) % 3 == 0
    exact = linear_probe(x[train], y[train], x[test], y[test], weight_decay=1e-3)
    for optimizer, lr in (("sgd", 0.1), ("lars", 2.0)):
        sgd = sgd_linear_probe(x[train].numpy(), y[train].numpy(), x[test].numpy(), y[test].numpy(), epochs=30,
                               batch_size=32, lr=lr, weight_decay=1e-3, optimizer=optimizer, progress=False)  # fmt: skip
        assert 80 < exact < 99 and abs(sgd - exact) <= 1.0, (optimizer, sgd, exact)


def test_the_step_schedule_divides_by_ten_every_decay():
    assert [lr_at(s, 50, 0.05, "step", 15) for s in (0, 14, 15, 30, 45)] == pytest.approx(
        [0.05, 0.05, 5e-3, 5e-4, 5e-5]
    )
    assert lr_at(0, 10, 0.1, "cosine", 1) == 0.1 and lr_at(5, 10, 0.1, "cosine", 1) == pytest.approx(0.05)


def test_a_split_file_selects_exactly_its_images(images, tmp_path):
    dataset = build_dataset("imagefolder", root=images, train=True, image_size=SIZE, crop_scale=None)
    (tmp_path / "1percent.txt").write_text("ant_3.png\nbee_0.png\n\ncow_9.png\n")
    picked = split_file_indices(dataset, tmp_path / "1percent.txt")
    assert sorted(Path(dataset.samples[i][0]).name for i in picked) == ["ant_3.png", "bee_0.png", "cow_9.png"]
    (tmp_path / "1percent.txt").write_text("ant_3.png\nyak_1.png\n")
    with pytest.raises(ValueError, match="1 of its 2 images are not in"):
        split_file_indices(dataset, tmp_path / "1percent.txt")


# ----------------------------------------------------------------------------------------------------------
# the command


def test_one_command_evaluates_a_run_folder(evaluate_script, images, tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    res = evaluate_script.main([str(run), "--protocol", str(_tiny_protocol(tmp_path)), "--data", str(images),
                       "--chunk", "8", "--batch-size", "4", "--num-workers", "0", "--quiet"])  # fmt: skip
    assert res["train_images"] == 30 and res["val_images"] == 12 and res["protocol"] == "tiny_linear"
    assert res["top1"] >= 75  # the colour of each class survives a random ViT's average-pooled features
    assert json.loads((run / "eval_tiny_linear.json").read_text())["top1"] == res["top1"]
    assert "tiny_linear (version 1): top-1" in capsys.readouterr().out
    feats, _, _ = open_store(run / "features" / f"target_{SIZE}px_val")
    assert feats.shape == (12, 32)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_such_path", "is neither a file nor a folder"),
        ("no_weights", "no target_encoder.safetensors (has the run finished"),
        ("no_protocol", "protocol 'in1k_linaer' not found"),
    ],
)
def test_bad_inputs_give_one_clear_line(evaluate_script, tmp_path, capsys, case, expected):
    run = _run_folder(tmp_path / "run")
    if case == "no_weights":
        (run / "target_encoder.safetensors").unlink()
    path = tmp_path / "nope" if case == "no_such_path" else run
    protocol = "in1k_linaer" if case == "no_protocol" else "in1k_linear"
    with pytest.raises(SystemExit) as err:
        evaluate_script.main([str(path), "--protocol", protocol, "--data", str(tmp_path), "--quiet"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert err.value.code == 2 and len(lines) == 1 and expected in lines[0], lines


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_extract_the_features_of_one(images, tmp_path):
    """torchrun --nproc_per_node 2 (gloo on CPU): each process encodes every other chunk of 8 images; the
    stores equal one process's to float tolerance, and the probe is fit once."""
    protocol, stores = _tiny_protocol(tmp_path), {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    for procs in (1, 2):
        run = _run_folder(tmp_path / f"run{procs}")
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(procs),
        ]
        cmd = [*launcher, str(SCRIPT), str(run), "--protocol", str(protocol), "--data", str(images), "--chunk", "8",
               "--batch-size", "4", "--num-workers", "0", "--quiet"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("top-1") == 1  # only the main process fits and prints
        result = json.loads((run / "eval_tiny_linear.json").read_text())
        assert result["processes"] == procs
        stores[procs] = [open_store(run / "features" / f"target_{SIZE}px_{s}") for s in ("train", "val")]
    for (f1, y1, _), (f2, y2, _) in zip(stores[1], stores[2]):
        assert np.array_equal(y1, y2) and np.allclose(f1, f2, atol=1e-5)


def test_the_low_shot_protocol_probes_a_class_balanced_subset_with_lbfgs(evaluate_script, images, tmp_path):
    d = yaml.safe_load((ROOT / "jepa_lite/configs/eval/in1k_1pct.yaml").read_text())
    d.update(name="tiny_1pct", image_size=SIZE, per_class=3, weight_decay=[1e-4])
    (tmp_path / "tiny_1pct.yaml").write_text(yaml.safe_dump(d))
    run = _run_folder(tmp_path / "run")
    res = evaluate_script.main([str(run), "--protocol", str(tmp_path / "tiny_1pct.yaml"), "--data", str(images),
                                "--chunk", "4", "--batch-size", "4", "--num-workers", "0", "--quiet"])  # fmt: skip
    assert res["train_images"] == 3 * len(CLASSES) and res["val_images"] == 12 and "lr" not in res
    _, labels, _ = open_store(run / "features" / f"target_{SIZE}px_train-3per-class")
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert res["top1"] >= 75
