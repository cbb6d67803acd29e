"""What a long run on a cluster meets, on CPU: a checkpoint that changed after it was written, a full disk, a
preemption signal, two runs pointed at one folder. Each is survived (the run resumes with the weights of an
uninterrupted run) or refused with a clear message."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import accelerate
import pytest
import torch
from safetensors.torch import load_file

from conftest import Blobs, tiny_config
from jepa_lite.cluster.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    verify_checkpoint,
)
from jepa_lite.cluster.preempt import REQUEUE_STATUS, STOP_FILE, Preempted
from jepa_lite.cluster.run_folder import RunFolder
from jepa_lite.cluster.runlock import LOCK_FILE, STALE_AFTER, RunFolderInUse, RunLock
from jepa_lite.core.build import make_accelerator
from jepa_lite.core.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import pretrain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, name: str, resume: str | None = None, **kw):
    cfg = tiny_config("ckpt_every=3", "keep_last=3")  # 8 steps: checkpoints after steps 3, 6 and 8
    return train(cfg, dataset=Blobs(), hooks=RunFolder(tmp_path / name, resume=resume), progress=False, **kw)


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
    resumed = train(tiny_config("ckpt_every=3", "keep_last=3"), dataset=Blobs(), hooks=RunFolder(tmp_path / "run", resume="auto"),
                    progress=False)  # fmt: skip
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


# ----------------------------------------------------------------------------------------------------------
# preemption: SIGTERM / SIGUSR1 or a PREEMPT file -> a checkpoint at the next step boundary, then exit 75


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
@pytest.mark.parametrize("moment, stops_after", [("step 2", 3), ("checkpoint write", 4), ("step 7", None)])
def test_a_preemption_signal_checkpoints_at_the_next_step_and_resumes_exactly(
    tmp_path, monkeypatch, sig, moment, stops_after
):
    """The signal arrives after step 2, while the checkpoint after step 3 is written, or with the last step."""
    full = _run(tmp_path, "full")
    real_save = accelerate.Accelerator.save_state

    def save_then_signal(self, output_dir, **kw):
        out = real_save(self, output_dir, **kw)
        if moment == "checkpoint write" and "ckpt-00000003" in str(output_dir):
            os.kill(os.getpid(), sig)
        return out

    def on_step(step, method, row):
        if moment == f"step {step + 1}":
            os.kill(os.getpid(), sig)

    before = signal.getsignal(sig)
    monkeypatch.setattr(accelerate.Accelerator, "save_state", save_then_signal)
    if stops_after is None:  # asked with the last step: the run is complete, nothing to stop
        done = _run(tmp_path, "run", on_step=on_step)
        assert done.step == 8 and _same_weights(done, full)
        return
    with pytest.raises(Preempted) as stopped:
        _run(tmp_path, "run", on_step=on_step)
    assert signal.getsignal(sig) == before  # the trainer's handler is gone again
    assert (stopped.value.step, stopped.value.reason) == (stops_after, sig.name)
    assert stopped.value.checkpoint == tmp_path / "run" / f"ckpt-{stops_after:08d}"
    assert latest_checkpoint(tmp_path / "run") == stopped.value.checkpoint
    monkeypatch.undo()
    resumed = _run(tmp_path, "run", resume="auto")
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert _same_weights(resumed, full)


def test_a_preempt_file_in_the_run_folder_stops_the_run_and_is_removed(tmp_path):
    def on_step(step, method, row):
        if step == 1:
            (tmp_path / "run" / STOP_FILE).touch()  # what the sbatch script writes before the time limit

    with pytest.raises(Preempted, match=r"PREEMPT exists\) after step 3: checkpoint .*ckpt-00000003 written"):
        _run(tmp_path, "run", on_step=on_step)
    assert not (tmp_path / "run" / STOP_FILE).exists()  # the requeued job must not stop at once


def test_pretrain_exits_75_on_preemption_and_resumes_to_the_uninterrupted_weights(tmp_path):
    """A real signal to a real `scripts/pretrain.py` process, as a scheduler sends it."""
    from conftest import PRETRAIN_TINY as TINY

    args = [sys.executable, str(ROOT / "scripts" / "pretrain.py"), "--quiet", "--no-eval", "--out", str(tmp_path),
            *TINY, "optim.max_steps=40", "data.limit=2048"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*args, "--name", "full"], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*args, "--name", "cut"], env=env, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == REQUEUE_STATUS, err
    assert "preempted (SIGUSR1) after step" in err and "resume with --resume auto" in err
    step = int(re.search(r"after step (\d+)", err).group(1))
    assert 3 <= step < 40 and (tmp_path / "cut" / f"ckpt-{step:08d}").is_dir()
    assert not (tmp_path / "cut" / LOCK_FILE).exists()  # the lock is released on the way out
    subprocess.run([*args, "--name", "cut", "--resume", "auto"], check=True, env=env, capture_output=True)
    a, b = (load_file(str(tmp_path / n / "target_encoder.safetensors")) for n in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------------
# two runs, one folder


HOLDER = """
import sys, time
from jepa_lite.cluster.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_run_in_a_live_runs_folder_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            RunFolderInUse, match=rf"in use by process {holder.pid} on {socket.gethostname()}"
        ):
            _run(tmp_path, "run")
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
            LOCK_FILE
        ]  # nothing of ours was written
        with pytest.raises(SystemExit) as exit_info:
            pretrain.main(["--no-eval", "--quiet", "--out", str(tmp_path), "--name", "run"])
        assert exit_info.value.code == 2 and f"in use by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    done = _run(tmp_path, "run")  # its owner is gone: the lock does not hold forever
    assert done.step == 8 and f"taking over the lock of process {holder.pid}" in capsys.readouterr().err
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_another_hosts_lock_holds_while_its_heartbeat_is_fresh(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "since": "earlier"}))
    with pytest.raises(RunFolderInUse, match="in use by process 1 on node-elsewhere"):
        RunLock(run).acquire()
    stale = time.time() - STALE_AFTER - 5
    os.utime(run / LOCK_FILE, (stale, stale))
    lock = RunLock(run).acquire()
    assert lock.owned and json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


# ----------------------------------------------------------------------------------------------------------
# the DataLoader


class _Failing(Blobs):
    """Blobs whose sample 5 raises, or kills the worker process that loads it."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def __getitem__(self, i):
        if i == 5 and self.how == "raises":
            raise OSError("read error on the storage server")
        if i == 5 and self.how == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_sample_that_fails_to_load_stops_the_run_naming_it(tmp_path, workers):
    with pytest.raises(RuntimeError, match=r"training sample 5 \(_Failing\) could not be loaded at step \d+: "
                       r"OSError: read error on the storage server"):  # fmt: skip
        train(tiny_config(f"data.num_workers={workers}"), dataset=_Failing("raises"), progress=False)


def test_a_killed_dataloader_worker_stops_the_run_instead_of_hanging(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader worker .* exited unexpectedly"):
        train(tiny_config("data.num_workers=2"), dataset=_Failing("killed"), progress=False)
    assert time.monotonic() - t0 < 60


def test_an_image_folder_that_loses_files_during_a_run_says_which(tmp_path):
    from conftest import png_folder
    from jepa_lite.data import build_dataset

    root = png_folder(tmp_path / "pets")
    ds = build_dataset("imagefolder", root=root, image_size=8, train=False)
    (root / "dog" / "1.png").unlink()  # a storage hiccup, or a cleanup job, between two epochs
    with pytest.warns(UserWarning, match=r"skipping unreadable image file .*dog/1\.png \(FileNotFoundError"):
        x, y = ds[4]
    assert y == 1 and torch.equal(x, ds[5][0])  # the next readable image stands in for it


def test_the_lock_has_one_holder_even_within_one_process(tmp_path):
    """train() takes the run folder's lock once; nothing else in the same process may take it beside it."""
    with RunLock(tmp_path / "run") as lock:
        assert lock.owned
        with pytest.raises(RunFolderInUse, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    with pytest.raises(RunFolderInUse, match=f"in use by process {os.getpid()}"), RunLock(tmp_path / "run"):
        train(tiny_config(), dataset=Blobs(), hooks=RunFolder(tmp_path / "run"), progress=False)
