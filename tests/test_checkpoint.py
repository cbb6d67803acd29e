"""Tests of jepa_lite/cluster/checkpoint.py: atomic save and prune, resume checks that name the broken file, safe
loading (no pickled object is ever executed), non-finite weights never saved, and the resume messages of
scripts/pretrain.py."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pretrain
import pytest
import torch
from torch import nn

from jepa_lite.cluster.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from jepa_lite.core.build import make_accelerator
from jepa_lite.core.config import Config
from jepa_lite.core.weights import WeightsError, export_weights, load_weights

ROOT = Path(__file__).resolve().parents[1]


def _prepared(width: int = 8, seed: int = 0):
    """A fresh accelerator with a small model and its optimizer prepared, one optimizer step taken."""
    acc = make_accelerator(Config())
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    model(torch.randn(5, 4)).square().mean().backward()
    opt.step()
    return acc, model, opt


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    acc, _, _ = _prepared()
    return save_checkpoint(acc, tmp_path / "run", 3, {"config": {"seed": 0}})


def _forget_manifest(ckpt: Path) -> None:
    """Make `ckpt` look like a checkpoint written before manifests: the file checks are then what protects."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state.pop("files")
    (ckpt / "trainer_state.json").write_text(json.dumps(state))


def _load_into_fresh(ckpt: Path, width: int = 8) -> tuple[dict, nn.Module]:
    acc, model, _ = _prepared(width, seed=1)
    return load_checkpoint(acc, ckpt), model


# ----------------------------------------------------------------------------------------------------------
# save, prune, resume round trip


def test_round_trip_restores_weights_and_step(ckpt: Path) -> None:
    state, model = _load_into_fresh(ckpt)
    assert state["step"] == 3 and state["config"] == {"seed": 0}
    acc, ref, _ = _prepared()
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_save_is_atomic_prunes_and_leaves_no_temporaries(tmp_path: Path) -> None:
    acc, _, _ = _prepared()
    run = tmp_path / "run"
    (run / "ckpt-00000001.tmp").mkdir(parents=True)  # leftovers of a crashed save and a crashed prune
    (run / "ckpt-00000000.old").mkdir()
    for step in (1, 2, 3, 3):  # the same step twice: a resumed run that ends where it started
        save_checkpoint(acc, run, step, {}, keep_last=2)
    assert sorted(p.name for p in run.iterdir()) == ["ckpt-00000002", "ckpt-00000003"]
    assert latest_checkpoint(run).name == "ckpt-00000003"
    (run / "ckpt-00000009.tmp").mkdir()  # a torn write is never a checkpoint
    (run / "ckpt-00000008").mkdir()  # nor a folder without its trainer state
    assert latest_checkpoint(run).name == "ckpt-00000003"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    acc, model, _ = _prepared()
    good = save_checkpoint(acc, tmp_path, 1, {})
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(
        FloatingPointError, match=f"step 2.*NaN or inf.*last good checkpoint is {re.escape(str(good))}"
    ):
        save_checkpoint(acc, tmp_path, 2, {})
    assert latest_checkpoint(tmp_path) == good and not list(tmp_path.glob("ckpt-00000002*"))


def test_export_is_atomic_and_load_weights_checks_the_file(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    path = export_weights(model, tmp_path / "w.safetensors", {"step": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    other = load_weights(nn.Linear(3, 2), path)
    assert torch.equal(other.weight, model.weight)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(WeightsError, match=f"{re.escape(str(path))} is truncated"):
        load_weights(nn.Linear(3, 2), path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(nn.Linear(3, 2), tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------------------------------------
# a failed resume never restarts silently: every broken checkpoint names its file and the problem


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


BROKEN = {
    "model truncated": (lambda c: _truncate(c / "model.safetensors"), r"model\.safetensors is truncated"),
    "model cut to 4 bytes": (lambda c: _truncate(c / "model.safetensors", 0.0001), r"model\.safetensors is truncated"),
    "model header garbage": (lambda c: (c / "model.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"not json" * 2),
                             r"model\.safetensors has a corrupt safetensors header"),
    "model missing": (lambda c: (c / "model.safetensors").unlink(), r"incomplete: model\.safetensors is missing"),
    "optimizer truncated": (lambda c: _truncate(c / "optimizer.bin"), r"optimizer\.bin is truncated"),
    "optimizer missing": (lambda c: (c / "optimizer.bin").unlink(), r"optimizer\.bin is missing"),
    "rng truncated": (lambda c: _truncate(c / "random_states_0.pkl"), r"random_states_0\.pkl is corrupt or truncated"),
    "rng missing": (lambda c: (c / "random_states_0.pkl").unlink(), r"random_states_0\.pkl is missing"),
    "state missing": (lambda c: (c / "trainer_state.json").unlink(), r"incomplete: trainer_state\.json is missing"),
    "state corrupt": (lambda c: (c / "trainer_state.json").write_text('{"step": '), r"trainer_state\.json is corrupt"),
    "state without step": (lambda c: (c / "trainer_state.json").write_text("{}"), r"trainer_state\.json is corrupt"),
}  # fmt: skip


@pytest.mark.parametrize("case", BROKEN)
def test_broken_checkpoint_names_the_file_and_the_problem(ckpt: Path, case: str) -> None:
    breaker, message = BROKEN[case]
    breaker(ckpt)
    with pytest.raises(CheckpointError, match=message) as err:
        _load_into_fresh(ckpt)
    assert str(ckpt) in str(err.value)


def test_checkpoint_of_another_model_is_refused_with_the_difference(ckpt: Path) -> None:
    with pytest.raises(CheckpointError, match=r"model\.safetensors holds the weights of a different model.*"
                       r"shape mismatches \(e\.g\. 0\.bias: file \[8\], model \[16\]\)"):  # fmt: skip
        _load_into_fresh(ckpt, width=16)


def test_optimizer_of_another_model_is_refused_naming_the_file(tmp_path: Path, ckpt: Path) -> None:
    acc, _, _ = _prepared(width=16)
    other = save_checkpoint(acc, tmp_path / "other", 3, {})
    (ckpt / "optimizer.bin").write_bytes((other / "optimizer.bin").read_bytes())
    with pytest.raises(CheckpointError, match=r"optimizer\.bin has \d+ bytes, its manifest says"):
        _load_into_fresh(ckpt)
    _forget_manifest(ckpt)
    with pytest.raises(CheckpointError, match=r"optimizer\.bin belongs to another model"):
        _load_into_fresh(ckpt)


def test_missing_checkpoint_folder_is_an_error(tmp_path: Path) -> None:
    acc, _, _ = _prepared()
    with pytest.raises(FileNotFoundError, match="checkpoint folder .*nope does not exist"):
        load_checkpoint(acc, tmp_path / "nope")


# ----------------------------------------------------------------------------------------------------------
# safe loading: a pickle payload placed where any loader reads is refused, and never runs


class Payload:
    """Unpickling this creates `marker` (by calling open): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_payload_is_live_without_weights_only(tmp_path: Path) -> None:
    """Positive control: torch.load(weights_only=False) does run it, so the tests below mean something."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.bin"
    torch.save({"x": Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "name, message",
    [
        ("optimizer.bin", r"refusing to load .*optimizer\.bin"),  # read by accelerate's own load_state
        ("random_states_0.pkl", r"refusing to load .*random_states_0\.pkl"),
        ("custom_checkpoint_0.pkl", r"refusing to load .*custom_checkpoint_0\.pkl"),
        ("pytorch_model.bin", r"model\.safetensors is missing"),  # the pickle fallback is never tried
    ],
)
def test_pickled_code_in_a_checkpoint_is_refused_and_never_runs(ckpt: Path, name: str, message: str) -> None:
    marker = ckpt.parent / "pwned"
    if name == "pytorch_model.bin":
        (ckpt / "model.safetensors").unlink()
    state = (
        {"state": {}, "param_groups": Payload(marker)} if name == "optimizer.bin" else {"x": Payload(marker)}
    )
    torch.save(state, ckpt / name)
    _forget_manifest(ckpt)  # else the manifest refuses the changed file before any of it is read
    with pytest.raises(CheckpointError, match=message):
        _load_into_fresh(ckpt)
    assert not marker.exists()


def test_pickled_code_in_official_or_weights_files_is_refused(tmp_path: Path) -> None:
    from jepa_lite.interop import load_encoder, load_official

    marker = tmp_path / "pwned"
    official = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    torch.save({"encoder": {"module.pos_embed": torch.zeros(1)}, "target_encoder": Payload(marker)}, official)
    for load in (load_official, load_encoder):
        with pytest.raises(ValueError, match="refusing to load"):
            load(official)
    fake = tmp_path / "w.safetensors"  # a pickle under a safetensors name
    fake.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(WeightsError, match="not a safetensors file|truncated|corrupt"):
        load_weights(nn.Linear(2, 2), fake)
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only() -> None:
    sources = [*ROOT.glob("jepa_lite/*.py"), *ROOT.glob("scripts/*.py")]
    for path in sources:
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path.name}: {call}"
        assert not re.search(r"pickle\.loads?\(|weights_only=False|register_for_checkpointing", text), (
            path.name
        )


def test_accelerate_loads_optimizer_and_rng_states_weights_only() -> None:
    """The installed accelerate reads optimizer and RNG files through utils.load, which defaults to
    weights_only=True (custom states, which we never register, would not be)."""
    import inspect

    from accelerate import checkpointing
    from accelerate.utils import other

    src = inspect.getsource(checkpointing.load_accelerator_state)
    assert "torch.load" not in src and src.count("load(") >= 3
    assert 'kwargs["weights_only"] = True' in inspect.getsource(other.load)


# ----------------------------------------------------------------------------------------------------------
# scripts/pretrain.py: --resume auto on an empty run is a fresh start, said out loud; a missing path is an error

TINY = [
    "data.name=shapes", "data.limit=16", "data.image_size=32", "model.patch_size=8", "model.embed_dim=16",
    "model.depth=1", "model.num_heads=2", "model.predictor_dim=8", "model.predictor_depth=1",
    "model.predictor_heads=2", "optim.global_batch=8", "optim.max_steps=1", "mask.min_context=1",
]  # fmt: skip


def test_resume_auto_without_checkpoint_starts_fresh_and_says_so(tmp_path: Path, capsys) -> None:
    args = ["--no-eval", "--quiet", "--out", str(tmp_path), "--name", "r", "--resume", "auto", *TINY]
    pretrain.main(args)
    assert (
        f"--resume auto: no complete checkpoint in {tmp_path / 'r'}: starting fresh"
        in capsys.readouterr().out
    )
    pretrain.main(args)
    assert f"--resume auto: resuming from {tmp_path / 'r' / 'ckpt-00000001'}" in capsys.readouterr().out


def test_resume_from_a_missing_path_is_an_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "r" / "ckpt-00000005"
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(
            ["--no-eval", "--quiet", "--out", str(tmp_path), "--name", "r", "--resume", str(missing), *TINY]
        )
    assert exit_info.value.code == 2
    assert re.search(f"--resume {re.escape(str(missing))}: no such checkpoint", capsys.readouterr().err)
    assert not (tmp_path / "r").exists()  # stopped before writing anything


def test_resume_from_a_broken_checkpoint_stops_the_run(tmp_path: Path) -> None:
    args = ["--no-eval", "--quiet", "--out", str(tmp_path), "--name", "r"]
    pretrain.main([*args, *TINY])
    ckpt = tmp_path / "r" / "ckpt-00000001"
    _truncate(ckpt / "model.safetensors")
    explicit = r"ckpt-00000001/model\.safetensors is truncated"
    auto = r"every complete checkpoint .* damaged: .*ckpt-00000001/model\.safetensors has \d+ bytes, its manifest"
    for resume, message in (("auto", auto), (str(ckpt), explicit)):
        with pytest.raises(CheckpointError, match=message):
            pretrain.main([*args, "--resume", resume, *TINY, "optim.max_steps=2"])
    assert not (tmp_path / "r" / "ckpt-00000002").exists()


def test_metrics_rows_cut_short_by_a_crash_are_dropped(tmp_path: Path) -> None:
    from jepa_lite.core.steplog import _read_rows

    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n0,1.5\n1,1.4\n2")
    assert [r["step"] for r in _read_rows(path, keep_until=5)] == ["0", "1"]
    assert os.path.getsize(path) > 0
    assert json.dumps(_read_rows(path, keep_until=1)) == '[{"step": "0", "loss": "1.5"}]'
