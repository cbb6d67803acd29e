"""What a long run on a cluster meets, on CPU: a checkpoint that changed after it was written, a full disk.
Each is survived (the run resumes with the weights of an uninterrupted run) or refused with a clear message."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import accelerate
import pytest
import torch
from test_train import Blobs, tiny_config

from jepa_lite.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, verify_checkpoint
from jepa_lite.train import make_accelerator, train


def _run(tmp_path: Path, name: str, **kw):
    cfg = tiny_config("ckpt_every=3", "keep_last=3")  # 8 steps: checkpoints after steps 3, 6 and 8
    return train(cfg, dataset=Blobs(), run_dir=tmp_path / name, progress=False, **kw)


def _same_weights(a, b) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.method.state_dict().values(), b.method.state_dict().values())
    )


def test_every_checkpoint_carries_a_manifest_of_sizes_and_checksums(tmp_path):
    _run(tmp_path, "run")
    ckpt = tmp_path / "run" / "ckpt-00000008"
    files = json.loads((ckpt / "trainer_state.json").read_text())["files"]
    assert set(files) == {p.name for p in ckpt.iterdir()} - {"trainer_state.json"}
    assert all(files[n]["size"] == (ckpt / n).stat().st_size and len(files[n]["sha256"]) == 64 for n in files)
    assert verify_checkpoint(ckpt) is None


def test_a_checkpoint_changed_after_writing_is_skipped_for_the_previous_one(tmp_path, capsys):
    full = _run(tmp_path, "full")
    _run(tmp_path, "run")
    newest = tmp_path / "run" / "ckpt-00000008"
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in a weight: same size, still a valid file
    weights.write_bytes(bytes(data))
    assert "differs from its manifest's checksum" in verify_checkpoint(newest)
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "ckpt-00000006"
    err = capsys.readouterr().err
    assert "skipping checkpoint ckpt-00000008" in err and "resuming from ckpt-00000006" in err
    with pytest.raises(CheckpointError, match="differs from its manifest's checksum"):
        load_checkpoint(make_accelerator(tiny_config()), newest)  # named explicitly: refused, not replaced
    resumed = train(tiny_config("ckpt_every=3", "keep_last=3"), dataset=Blobs(), run_dir=tmp_path / "run",
                    progress=False, resume="auto")  # fmt: skip
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert _same_weights(resumed, full)


def test_when_every_checkpoint_is_damaged_the_run_stops_instead_of_starting_afresh(tmp_path):
    _run(tmp_path, "run")
    for ckpt in (tmp_path / "run").glob("ckpt-*"):
        (ckpt / "optimizer.bin").write_bytes(b"partial copy")
    with pytest.raises(CheckpointError, match="every complete checkpoint of .* is damaged"):
        latest_checkpoint(tmp_path / "run")


@pytest.mark.parametrize("where", ["weights", "trainer state"])
def test_a_full_disk_keeps_the_last_checkpoint_and_says_what_happened(tmp_path, monkeypatch, where):
    full = _run(tmp_path, "full")
    real_save, real_open = accelerate.Accelerator.save_state, open
    calls = {"n": 0}

    def failing_save(self, output_dir, **kw):
        calls["n"] += 1
        if calls["n"] == 2 and where == "weights":  # the second checkpoint: a partial file, then ENOSPC
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir, **kw)

    def failing_open(path, mode="r", *args, **kw):
        if (
            where == "trainer state"
            and str(path).endswith("ckpt-00000006.tmp/trainer_state.json")
            and "w" in mode
        ):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kw)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", failing_save)
    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(CheckpointError) as err:
        _run(tmp_path, "run")
    msg = str(err.value)
    assert "could not write checkpoint ckpt-00000006 at step 6: [Errno 28] No space left on device" in msg
    assert f"the newest complete checkpoint is {tmp_path / 'run' / 'ckpt-00000003'}" in msg
    assert not list((tmp_path / "run").glob("*.tmp"))  # the partial folder is gone
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "ckpt-00000003"
    resumed = _run(tmp_path, "run", resume="auto")
    assert _same_weights(resumed, full)
