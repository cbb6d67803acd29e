import math

import pytest
import torch

from conftest import Blobs, tiny_config
from jepa_lite.cluster.run_folder import RunFolder
from jepa_lite.core.batches import GlobalBatchSampler, split_global_batch
from jepa_lite.core.build import initial_encoder, total_steps_of
from jepa_lite.core.train import train


def test_split_global_batch_keeps_the_global_batch():
    assert split_global_batch(2048, 16, 128) == (128, 1)
    assert split_global_batch(2048, 8, 128) == (128, 2)
    assert split_global_batch(2048, 1, 128) == (128, 16)
    assert split_global_batch(256, 1) == (256, 1)
    assert split_global_batch(96, 2, 40) == (24, 2)  # largest divisor of 48 that fits
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        split_global_batch(256, 3)
    with pytest.raises(ValueError, match="global_batch 0"):
        split_global_batch(0, 1)


def test_ranks_and_micro_batches_partition_each_global_batch():
    def keys(world, accum, micro):
        out = []
        for rank in range(world):
            s = GlobalBatchSampler(
                100, 12, micro=micro, accum=accum, rank=rank, world_size=world, seed=3, total_steps=20
            )
            out += [k for mb in s for k in mb]
        return sorted(out)

    one = keys(1, 1, 12)
    assert one == keys(2, 1, 6) == keys(2, 3, 2) == keys(4, 3, 1)
    per_step = {}
    for idx, step, slot, _ in one:
        per_step.setdefault(step, []).append((slot, idx))
    assert sorted(per_step) == list(range(20))
    for items in per_step.values():
        assert sorted(s for s, _ in items) == list(range(12))
        assert len({i for _, i in items}) == 12  # no image twice within a step
    # an epoch (8 steps of 12 from 100 images) never repeats an image
    epoch0 = [i for i, s, _, _ in one if s < 8]
    assert len(set(epoch0)) == len(epoch0) == 96


def test_resume_continues_the_same_loss_curve(tmp_path):
    data = Blobs()
    cfg = tiny_config("ckpt_every=3")
    full = train(cfg, dataset=data, hooks=RunFolder(tmp_path / "full"), progress=False)
    assert full.step == 8 and len(full.history) == 8
    part = train(cfg, dataset=data, hooks=RunFolder(tmp_path / "cut"), progress=False, stop_after=3)
    assert part.step == 3 and (tmp_path / "cut" / "ckpt-00000003").is_dir()
    rest = train(cfg, dataset=data, hooks=RunFolder(tmp_path / "cut", resume="auto"), progress=False)
    assert [r["step"] for r in rest.history] == list(range(8))  # metrics.csv rows before the cut are kept
    assert [r["loss"] for r in rest.history] == [r["loss"] for r in full.history]
    for a, b in zip(full.method.state_dict().values(), rest.method.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method, fill", [("ijepa", "pad"), ("mae", "pad"), ("ijepa", "fixed")])
def test_the_official_recipe_switches_train_and_resume_exactly(tmp_path, method, fill):
    """Padded contexts, the official init and in-step crops (global RNG, restored on resume) together."""
    data = Blobs()
    cfg = tiny_config("ckpt_every=3", f"mask.context_fill={fill}", "model.init=official",
                      "method.crop_scale=[0.3,1.0]", f"method.name={method}")  # fmt: skip
    full = train(cfg, dataset=data, hooks=RunFolder(tmp_path / "full"), progress=False)
    plain = train(tiny_config(f"method.name={method}"), dataset=data, progress=False)
    assert [r["loss"] for r in full.history] != [
        r["loss"] for r in plain.history
    ]  # the switches do something
    train(cfg, dataset=data, hooks=RunFolder(tmp_path / "cut"), progress=False, stop_after=3)
    rest = train(cfg, dataset=data, hooks=RunFolder(tmp_path / "cut", resume="auto"), progress=False)
    assert [r["loss"] for r in rest.history] == [r["loss"] for r in full.history]
    for a, b in zip(full.method.state_dict().values(), rest.method.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("overrides", [["method.name=invariant"], ["model.drop_path=0.2"]])
def test_steps_that_draw_from_the_global_rng_resume_exactly(tmp_path, overrides):
    """The invariant method's views and drop-path use the global RNG: a resumed run must draw the same."""
    cfg = tiny_config("ckpt_every=3", "optim.epochs=1", *overrides)
    full = train(cfg, dataset=Blobs(), hooks=RunFolder(tmp_path / "full"), progress=False)
    train(cfg, dataset=Blobs(), hooks=RunFolder(tmp_path / "cut"), progress=False, stop_after=3)
    rest = train(cfg, dataset=Blobs(), hooks=RunFolder(tmp_path / "cut", resume="auto"), progress=False)
    assert [r["loss"] for r in rest.history] == [r["loss"] for r in full.history]


def test_training_lowers_the_loss_and_moves_the_target_encoder():
    data = Blobs()
    cfg = tiny_config("optim.epochs=6", "optim.lr=2e-3", "optim.ema=[0.9,0.95]")
    init = initial_encoder(cfg, 1).state_dict()
    res = train(cfg, dataset=data, progress=False)
    losses = [r["loss"] for r in res.history]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    trained = res.method.target_encoder.state_dict()
    assert not torch.equal(init["blocks.0.attn.qkv.weight"], trained["blocks.0.attn.qkv.weight"])
    assert torch.equal(init["pos_embed"], trained["pos_embed"])  # fixed positions never move


@pytest.mark.parametrize("method", ["mae", "invariant"])
def test_other_methods_run_through_the_same_loop(method):
    strategy = "random" if method == "mae" else "multiblock"
    cfg = tiny_config(f"method.name={method}", f"mask.strategy={strategy}", "optim.max_steps=2")
    start = initial_encoder(cfg, 1).state_dict()
    res = train(cfg, dataset=Blobs(), progress=False)
    assert [r["step"] for r in res.history] == [0, 1]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in res.history)
    # the loop's optimizer reached this method's encoder: every block moved, the fixed positions did not
    trained = res.method.eval_encoder.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight"):
        assert not torch.equal(start[key], trained[key]), key
    assert torch.equal(start["pos_embed"], trained["pos_embed"])


def test_schedule_length_follows_epochs_and_max_steps():
    cfg = tiny_config()
    assert total_steps_of(cfg, 64) == (4, 8, 2)
    cfg.optim.max_steps = 5
    assert total_steps_of(cfg, 64) == (4, 5, 2)
    with pytest.raises(ValueError, match="smaller than optim.global_batch"):
        total_steps_of(cfg, 10)


def test_non_finite_loss_stops_with_the_step(tmp_path):
    data = Blobs()
    data.x[:] = float("nan")
    with pytest.raises(FloatingPointError, match="at step 0"):
        train(tiny_config(), dataset=data, progress=False)


def test_throughput_logs_per_device_images_model_flops_and_mfu(tmp_path):
    import csv
    import math

    from jepa_lite.core.flops import ijepa_step_flops
    from jepa_lite.core.steplog import _throughput

    cfg = tiny_config("optim.max_steps=2")
    train(cfg, dataset=Blobs(), hooks=RunFolder(tmp_path), progress=False)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_image = ijepa_step_flops(cfg).total
    for r in rows:
        ips = float(r["img_per_s_device"])
        assert ips == pytest.approx(float(r["img_per_s"]))  # one process: per device == global
        assert float(r["tflops"]) == pytest.approx(ips * per_image / 1e12, rel=1e-6)
        assert math.isnan(float(r["mfu"]))  # a CPU has no bf16 peak in flops.PEAK_BF16_FLOPS
    # on a GPU with a known peak, MFU = achieved model FLOP/s / peak (H100 SXM: 989 TFLOP/s dense bf16)
    h100 = _throughput(1000.0, 4e11, "NVIDIA H100 80GB HBM3")
    assert h100["tflops"] == pytest.approx(400.0) and h100["mfu"] == pytest.approx(400e12 / 989e12, rel=1e-3)
    assert math.isnan(_throughput(1000.0, math.nan, "NVIDIA H100 80GB HBM3")["mfu"])  # MAE/Invariant: unknown


@pytest.mark.parametrize("method", ["ijepa", "mae"])
def test_initial_encoder_is_the_encoder_train_starts_from(method):
    cfg = tiny_config(f"method.name={method}")
    start = initial_encoder(cfg, 1).state_dict()
    untrained = train(cfg, dataset=Blobs(), progress=False, stop_after=0).method.eval_encoder.state_dict()
    assert start.keys() == untrained.keys()
    assert all(torch.equal(start[k], untrained[k]) for k in start)
    other = initial_encoder(tiny_config(f"method.name={method}", "seed=1"), 1).state_dict()
    assert not torch.equal(start["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("name", ["fmnist", "shapes", "cifar10"])
def test_image_channels_have_one_source_the_datasets_entry(name):
    from jepa_lite.core.build import build_method
    from jepa_lite.core.flops import encoder_dims
    from jepa_lite.data import dataset_info

    cfg = tiny_config(f"data.name={name}")
    channels = dataset_info(name)["in_chans"]
    assert build_method(cfg).eval_encoder.in_chans == initial_encoder(cfg).in_chans == channels
    assert encoder_dims(cfg)["in_chans"] == channels


def test_train_refuses_images_whose_channels_differ_from_the_config():
    rgb = torch.utils.data.TensorDataset(torch.zeros(32, 3, 16, 16), torch.zeros(32, dtype=torch.long))
    with pytest.raises(ValueError, match="the dataset's images have 3 channels, data.name='fmnist' has 1"):
        train(tiny_config(), dataset=rgb, progress=False)
