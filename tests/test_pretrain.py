import json
from pathlib import Path

import pretrain
import pytest
from safetensors.torch import load_file

from conftest import PRETRAIN_TINY as TINY
from jepa_lite.core.build import build_encoder
from jepa_lite.core.config import load_config
from jepa_lite.core.evaluate import PROBE_VERSION
from jepa_lite.core.weights import load_weights


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs Fashion-MNIST")
def test_pretrain_writes_a_complete_run_with_init_baseline(tmp_path):
    results = pretrain.main(["--out", str(tmp_path), "--quiet", "--pixels", *TINY])
    run = tmp_path / "fmnist_vit_tiny"
    for name in ["config.yaml", "metrics.csv", "config.json", "results.json", "encoder.safetensors",
                 "target_encoder.safetensors", "ckpt-00000003"]:  # fmt: skip
        assert (run / name).exists(), name
    saved = json.loads((run / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["probe_version"] == PROBE_VERSION  # so a later probe change can tell these numbers apart
    assert saved["seed"] == 0 and saved["steps"] == 3
    # the wall time counts everything the learner waited for: training and probes, plus start-up
    assert saved["wall_seconds"] >= saved["train_seconds"] + saved["eval_seconds"] - 0.2
    for block in (saved, saved["init"], saved["pixels"]):
        assert set(block) >= {"linear_probe", "knn", "low_shot", "rankme"}
    # chance is 10%: raw pixels of 300 images reach about 75%, a tiny ViT after 3 steps (or at init) about 47%
    assert 60 < saved["pixels"]["linear_probe"] <= 100
    for block in (saved, saved["init"]):
        assert 25 < block["linear_probe"] <= 100
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3
    # the exported target encoder loads into the encoder the config describes
    cfg = load_config("fmnist_vit_tiny", TINY)
    enc = load_weights(build_encoder(cfg, 1), run / "target_encoder.safetensors")
    assert set(load_file(str(run / "target_encoder.safetensors"))) == set(enc.state_dict())


def test_method_presets_and_names():
    cfg = pretrain.resolve_config(pretrain.parse_args(["--method", "mae", "optim.lr=5e-4"]))
    assert cfg.method.name == "mae" and cfg.mask.strategy == "random" and cfg.mask.target_ratio == 0.75
    assert cfg.name == "fmnist_vit_tiny-mae" and cfg.optim.lr == 5e-4
    cfg = pretrain.resolve_config(pretrain.parse_args(["--method", "mae", "mask.strategy=multiblock"]))
    assert cfg.mask.strategy == "multiblock"  # the user's override wins over the preset


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs Fashion-MNIST")
def test_probes_side_by_side_equal_the_probes_one_after_the_other():
    """--side-by-side on 2+ CPU threads: the init encoder is probed in a second process beside the trained
    one; where the fits converge (a small problem), the same numbers as probing both in turn."""
    import torch

    from jepa_lite.core.build import build_method, build_split

    cfg = load_config("fmnist_vit_tiny", TINY)
    torch.manual_seed(1)
    trained = build_method(cfg).eval_encoder.eval()  # any encoder other than the init one
    sets = [build_split(cfg, train=t, limit=n) for t, n in ((True, 300), (False, 200))]
    probe = dict(per_class=5, batch_size=256, device="cpu", progress=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        side_by_side = pretrain._probe_trained_and_init(cfg, trained, *sets, probe, side_by_side=True)
        torch.set_num_threads(1)
        in_turn = pretrain._probe_trained_and_init(cfg, trained, *sets, probe)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(side_by_side, in_turn):
        assert a == pytest.approx(b, abs=0.01)
    assert side_by_side[0] != side_by_side[1]  # the trained and the init encoder were both probed
