"""scripts/pretrain.py end to end in subprocesses: two CPU processes (gloo, via torchrun) follow the same loss
curve as one process with the same global batch, and a run killed after a checkpoint resumes onto the curve of
an uninterrupted run. A tiny ViT on 256 Fashion-MNIST images keeps each run to seconds of compute."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pretrain.py"
TINY = [
    "data.limit=256", "data.image_size=28", "model.patch_size=7", "model.embed_dim=32", "model.depth=2",
    "model.num_heads=2", "model.predictor_dim=16", "model.predictor_depth=1", "model.predictor_heads=2",
    "optim.global_batch=16", "optim.epochs=10", "mask.min_context=1",
]  # fmt: skip
TOL = 1e-5

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)  # never inherit a launcher's world from the test runner
    return env


def _fmnist_or_skip() -> None:
    from jepa_lite.data.fashion_mnist import find_fashion_mnist

    try:
        find_fashion_mnist()
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not available: {err}")


def _args(out: Path, name: str, *extra: str) -> list[str]:
    return [str(SCRIPT), "--no-eval", "--quiet", "--out", str(out), "--name", name, *TINY, *extra]


def _run(cmd: list[str], timeout: float = 300) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _assert_same_curve(a: list[dict], b: list[dict], keys=("loss", "lr", "wd", "momentum")) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in keys:
            assert abs(ra[k] - rb[k]) <= TOL, f"step {int(ra['step'])} {k}: {ra[k]} != {rb[k]}"


def test_two_processes_match_one(tmp_path: Path) -> None:
    """torchrun --nproc_per_node 2 (gloo on CPU) gives the per-step losses of a single process to 1e-5."""
    _fmnist_or_skip()
    _run([sys.executable, *_args(tmp_path, "one", "optim.max_steps=4")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, *_args(tmp_path, "two", "optim.max_steps=4")])
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(one) == 4
    _assert_same_curve(one, two)
    w1 = load_file(str(tmp_path / "one" / "encoder.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "encoder.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        assert (w1[k] - w2[k]).abs().max().item() <= TOL, k


def _complete_ckpts(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp")]


def test_kill_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    """SIGKILL right after the first complete checkpoint; `--resume auto` continues the same curve."""
    _fmnist_or_skip()
    steps, extra = 30, ("optim.max_steps=30", "ckpt_every=2", "keep_last=2")
    _run([sys.executable, *_args(tmp_path, "full", *extra)])

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, *_args(tmp_path, "killed", *extra)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not _complete_ckpts(run_dir) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run_dir / "results.json").exists()
    assert not (run_dir / f"ckpt-{steps:08d}").exists(), "the run finished before the kill"

    _run([*cmd, "--resume", "auto"])
    full, resumed = _metrics(tmp_path / "full"), _metrics(run_dir)
    assert len(full) == steps
    _assert_same_curve(full, resumed)
    assert json.loads((run_dir / "results.json").read_text())["steps"] == steps
    for name in ("encoder.safetensors", "target_encoder.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(run_dir / name))
        for k in a:
            assert (a[k] - b[k]).abs().max().item() <= TOL, f"{name} {k}"


def _workers(launcher: subprocess.Popen, n: int = 2, timeout: float = 120) -> list[int]:
    """PIDs of the training processes torchrun started (its children), once all n are up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        if len(pids) == n:
            return pids
        time.sleep(0.05)
    raise AssertionError("torchrun did not start its workers")


def _kill_a_rank_after_the_first_checkpoint(cmd: list[str], run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    workers = sorted(_workers(proc))
    deadline = time.monotonic() + 240
    while not _complete_ckpts(run_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(workers[1], signal.SIGKILL)  # rank 1 (torchrun starts rank 0 first): not the main process
    return proc


def test_a_dead_rank_stops_the_job_quickly_and_resume_auto_finishes_it(tmp_path: Path) -> None:
    """SIGKILL one of two ranks mid-run: the other stops within a minute naming the newest checkpoint (not
    torch's 30-minute collective timeout), and the restarted job ends with the weights of an uninterrupted one."""
    _fmnist_or_skip()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    extra = ("optim.max_steps=60", "ckpt_every=5", "dist_timeout=30")
    _run([*torchrun, *_args(tmp_path, "full", *extra)])
    cmd = [*torchrun, *_args(tmp_path, "cut", *extra)]
    proc = _kill_a_rank_after_the_first_checkpoint(cmd, tmp_path / "cut")
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 60 and proc.returncode != 0
    assert not (tmp_path / "cut" / "results.json").exists()
    assert "lost contact with the others at step" in out and "restart the job with --resume auto" in out, out[
        -3000:
    ]
    _run([*cmd, "--resume", "auto"])
    _assert_same_weights(tmp_path / "full", tmp_path / "cut")


def test_an_elastic_restart_resumes_by_itself(tmp_path: Path) -> None:
    """Under `torchrun --max-restarts 1` with `--resume auto`, SIGKILL of one rank makes torchrun restart both
    processes, which resume from the newest checkpoint and end with the weights of an uninterrupted run."""
    _fmnist_or_skip()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    extra = ("optim.max_steps=60", "ckpt_every=5", "dist_timeout=30")
    _run([*torchrun, *_args(tmp_path, "full", *extra)])
    cmd = [*torchrun, "--max-restarts", "1", *_args(tmp_path, "cut", *extra), "--resume", "auto"]
    proc = _kill_a_rank_after_the_first_checkpoint(cmd, tmp_path / "cut")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "lost contact with the others" in out and "--resume auto: resuming from" in out, out[-3000:]
    _assert_same_weights(tmp_path / "full", tmp_path / "cut")


def _assert_same_weights(a: Path, b: Path) -> None:
    assert (
        json.loads((b / "results.json").read_text())["steps"]
        == json.loads((a / "results.json").read_text())["steps"]
    )
    for name in ("encoder.safetensors", "target_encoder.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert (wa[k] - wb[k]).abs().max().item() <= TOL, f"{name} {k}"
