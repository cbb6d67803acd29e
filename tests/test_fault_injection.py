"""Kill anywhere, lose nothing: scripts/pretrain.py is SIGKILLed at many random (seeded) moments, inside
checkpoint writes too, and resumed each time with `--resume auto`; every resume must start from the newest
complete checkpoint, and the end result must equal an uninterrupted run bit for bit (CPU).

Starting Python with torch and timm costs ~4 s on a weak CPU, so the killed runs are forked from a
"zygote" process that has imported scripts/pretrain.py once (this file run as a script): each child calls
`pretrain.main(argv)` and is a real process, killed with SIGKILL. The reference run and the final resume are
cold `python scripts/pretrain.py` processes. Two kinds of kill:
  * timing: SIGKILL after a random delay (setup, checkpoint load, training steps, checkpoint writes, export);
  * hooks: `JEPA_LITE_KILL_AT=POINT:N` makes the run kill itself inside the N-th checkpoint write at one of
    jepa_lite.cluster.checkpoint.FAULT_POINTS (between the tmp write and the rename, after the rename,
    mid-prune), so the narrow windows are hit for certain.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pretrain.py"
STEPS = 120
TINY = [
    "data.name=shapes", "data.limit=64", "data.image_size=32", "model.patch_size=8", "model.embed_dim=32",
    "model.depth=1", "model.num_heads=2", "model.predictor_dim=16", "model.predictor_depth=1",
    "model.predictor_heads=2", "optim.global_batch=8", f"optim.max_steps={STEPS}", "optim.epochs=100",
    "mask.min_context=1", "ckpt_every=1", "keep_last=2",
]  # fmt: skip
ARGS = ["--no-eval", "--quiet", "--out", "runs", "--name", "run", "--resume", "auto", *TINY]
KILLS = 40  # timing kills; plus one hook kill per fault point and the end-of-run kills
SEED = 8
CURVE = ("step", "loss", "lr", "wd", "momentum")  # the deterministic columns of metrics.csv
CKPT = re.compile(r"ckpt-(\d{8})")


def _env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "JEPA_LITE_KILL_AT"):
        env.pop(key, None)
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------------------------
# the zygote: imports once, forks one child per run


def _zygote() -> None:
    """Read one JSON job a line ({cwd, argv, env, log}); fork a child running pretrain.main(argv), print its
    pid; on 'wait', reap it and print its exit code (negative: killed by that signal)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import pretrain  # noqa: F401 - the heavy imports happen here, once

    import jepa_lite.cluster.checkpoint  # noqa: F401
    import jepa_lite.core.evaluate  # noqa: F401
    import jepa_lite.core.train  # noqa: F401
    import jepa_lite.data  # noqa: F401

    print("ready", flush=True)
    pid = None
    for line in sys.stdin:
        if line.strip() == "wait":
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status), flush=True)
            continue
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: one pretrain.py run
            code = 1
            try:
                fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.chdir(job["cwd"])
                os.environ.update(job["env"])
                pretrain.main(job["argv"])
                code = 0
            except SystemExit as err:
                code = err.code if isinstance(err.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported in the log, the test fails on the exit code
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(pid, flush=True)


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "zygote"], cwd=ROOT, env=_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self, cwd: Path, log: Path, env: dict) -> int:
        job = dict(cwd=str(cwd), argv=ARGS, env=env, log=str(log))
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait(self) -> int:
        self.proc.stdin.write("wait\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ----------------------------------------------------------------------------------------------------------
# independent checks of the run folder


def _complete_checkpoints(run_dir: Path) -> list[int]:
    """Steps of the folders named like checkpoints, after checking that each one is whole: every file loads
    (safetensors, torch zip with weights_only, accelerate's RNG state) and the trainer state names its step."""
    import torch
    from accelerate.utils import load
    from safetensors.torch import load_file

    steps = []
    for p in sorted(run_dir.glob("ckpt-*")):
        m = CKPT.fullmatch(p.name)
        if not m:
            assert p.suffix in (".tmp", ".old"), f"unexpected folder {p}"
            continue
        assert json.loads((p / "trainer_state.json").read_text())["step"] == int(m[1]), p
        load_file(str(p / "model.safetensors"))
        torch.load(p / "optimizer.bin", weights_only=True)
        load(p / "random_states_0.pkl")
        steps.append(int(m[1]))
    return steps


def _curve(run_dir: Path) -> list[tuple[str, ...]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [tuple(row[k] for k in CURVE) for row in csv.DictReader(f)]


def _resume_line(log_text: str) -> str | None:
    lines = [ln for ln in log_text.splitlines() if ln.startswith("--resume auto:")]
    return lines[-1] if lines else None


def _expected_line(steps: list[int]) -> str:
    if not steps:
        return f"--resume auto: no complete checkpoint in {Path('runs/run')}: starting fresh"
    return f"--resume auto: resuming from {Path('runs/run') / f'ckpt-{max(steps):08d}'}"


def _rows(run_dir: Path) -> int:
    try:
        return (run_dir / "metrics.csv").read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return -1


def _kill_early(pid: int, run_dir: Path, rows: int, delay: float) -> None:
    """SIGKILL after `delay` s, or as soon as metrics.csv reaches `rows` (on a fast host a resumed run near the
    end could otherwise finish before a fixed delay is up)."""
    deadline = time.monotonic() + delay
    while _rows(run_dir) < rows and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)


def _kill_after_rows(pid: int, run_dir: Path, rows: int, delay: float) -> None:
    """SIGKILL `delay` s after metrics.csv reaches `rows` data rows (a step's row precedes its checkpoint)."""
    deadline = time.monotonic() + 60
    while _rows(run_dir) < rows and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the killed runs are forked")
def test_sigkill_anywhere_then_resume_auto_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL at KILLS random moments plus at every fault point; resume each time with --resume auto."""
    from jepa_lite.cluster.checkpoint import FAULT_POINTS

    ref_dir, dut_dir = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir()
    dut_dir.mkdir()
    run_dir = dut_dir / "runs" / "run"
    t0 = time.monotonic()
    reference = subprocess.Popen([sys.executable, str(SCRIPT), *ARGS], cwd=ref_dir, env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    rng = random.Random(SEED)
    # The plan. "early": SIGKILL a random time after the fork (setup, checkpoint loading, the first new step);
    # "rows": SIGKILL a random few ms after the run logs its r-th new step (the step's checkpoint write,
    # or the next step); "hook": the run kills itself at a fault point inside its N-th checkpoint write.
    plan: list[tuple] = []
    for _ in range(KILLS):
        if rng.random() < 0.25:
            plan.append(("early", rng.uniform(0.0, 0.5)))
        else:
            plan.append(("rows", rng.randint(1, 3), rng.uniform(0.0, 0.03)))
    for point in FAULT_POINTS:
        plan.insert(rng.randrange(len(plan) + 1), ("hook", f"{point}:{rng.randint(1, 3)}"))
    # the end of the run: die while re-saving the final checkpoint
    plan += [("hook", "ckpt_renamed:1")]

    zygote = Zygote()
    killed = verified = torn = 0
    try:
        for i, (kind, *arg) in enumerate(plan):
            done = _complete_checkpoints(run_dir) if run_dir.exists() else []
            expected = _expected_line(done)
            log = tmp_path / f"run{i:03d}.log"
            logged = _rows(run_dir)
            pid = zygote.start(dut_dir, log, {"JEPA_LITE_KILL_AT": arg[0] if kind == "hook" else ""})
            if kind == "early":
                # a new row: past both the last checkpoint and what the killed run before it logged
                _kill_early(pid, run_dir, max(logged, *done, 0) + 1, arg[0])
            elif kind == "rows":
                _kill_after_rows(pid, run_dir, max(done, default=0) + arg[0], arg[1])
            code = zygote.wait()
            text = log.read_text()
            assert code in (0, -signal.SIGKILL), f"run {i} ({kind} {arg}) failed with {code}:\n{text[-3000:]}"
            assert code != 0 or kind == "hook", f"run {i} ended before its kill; raise STEPS"
            line = _resume_line(text)
            if line is not None:  # else it died before deciding
                assert line == expected, (
                    f"run {i}: {line!r}, but the newest complete checkpoint is {done[-1:]}"
                )
                verified += 1
            killed += code == -signal.SIGKILL
            torn += run_dir.exists() and any(p.suffix in (".tmp", ".old") for p in run_dir.glob("ckpt-*"))
    finally:
        zygote.close()
    # the last word: a cold `python scripts/pretrain.py --resume auto`
    expected = _expected_line(_complete_checkpoints(run_dir))
    last = subprocess.run([sys.executable, str(SCRIPT), *ARGS], cwd=dut_dir, env=_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert last.returncode == 0, last.stdout[-2000:] + last.stderr[-3000:]
    assert _resume_line(last.stdout) == expected
    out, _ = reference.communicate(timeout=120)
    assert reference.returncode == 0, out[-3000:]
    print(f"\n{killed} SIGKILLs survived, {torn} of them inside a checkpoint write (a .tmp or .old folder "
          f"left behind); {verified} resume decisions checked; {time.monotonic() - t0:.0f} s")  # fmt: skip

    ref_run = ref_dir / "runs" / "run"
    assert killed >= KILLS and torn >= 3  # the hooks alone leave three
    assert _curve(run_dir) == _curve(ref_run) and len(_curve(ref_run)) == STEPS
    for name in ("encoder.safetensors", "target_encoder.safetensors", "config.json"):
        assert (run_dir / name).read_bytes() == (ref_run / name).read_bytes(), name
    assert json.loads((run_dir / "results.json").read_text())["steps"] == STEPS
    final = Path(f"ckpt-{STEPS:08d}") / "model.safetensors"
    assert (run_dir / final).read_bytes() == (ref_run / final).read_bytes()
    leftovers = sorted(p.name for p in run_dir.iterdir() if p.name.endswith((".tmp", ".old")))
    assert not leftovers, leftovers
    assert _complete_checkpoints(run_dir) == [STEPS - 1, STEPS]


# ----------------------------------------------------------------------------------------------------------
# non-finite loss: stop at the first bad step, keep the last good checkpoint


def _tiny_cfg(*overrides: str):
    from jepa_lite.core.config import Config, apply_overrides

    return apply_overrides(Config(), [
        "data.image_size=16", "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.predictor_dim=16",
        "model.predictor_depth=1", "model.predictor_heads=2", "optim.global_batch=8", "optim.max_steps=12",
        "optim.epochs=100", "optim.warmup_epochs=0", "mask.min_context=1", "ckpt_every=1", "keep_last=100",
        *overrides,
    ])  # fmt: skip


class _Images:
    """32 random 16-px images; `poison` holds indices whose image is NaN."""

    def __init__(self, poison: tuple[int, ...] = ()) -> None:
        import torch

        self.x = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        self.x[list(poison)] = float("nan")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


def _assert_last_good(run_dir: Path, step: int) -> None:
    import torch
    from safetensors.torch import load_file

    assert _complete_checkpoints(run_dir) == list(range(1, step + 1))  # nothing written after the bad step
    if step:
        weights = load_file(str(run_dir / f"ckpt-{step:08d}" / "model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values())
    with open(run_dir / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(step))


def test_nan_in_a_later_batch_stops_at_its_step_and_keeps_the_checkpoint_before(tmp_path: Path) -> None:
    from jepa_lite.cluster.run_folder import RunFolder
    from jepa_lite.core.batches import GlobalBatchSampler
    from jepa_lite.core.train import train

    sampler = GlobalBatchSampler(32, 8, micro=8, accum=1, seed=0, total_steps=12)
    batches = [[k[0] for k in mb] for mb in sampler]
    bad_step = 3  # the last step of the first epoch: its images appear nowhere earlier
    cfg = _tiny_cfg()
    with pytest.raises(
        FloatingPointError, match=rf"loss is nan at step {bad_step} \(the batch holds NaN/inf pixels\)"
    ):
        train(cfg, dataset=_Images(poison=(batches[bad_step][0],)), hooks=RunFolder(tmp_path), progress=False)
    _assert_last_good(tmp_path, bad_step)
    # resuming meets it again, at the same step
    with pytest.raises(FloatingPointError, match=rf"at step {bad_step}"):
        train(cfg, dataset=_Images(poison=(batches[bad_step][0],)), hooks=RunFolder(tmp_path, resume="auto"),
              progress=False)  # fmt: skip
    _assert_last_good(tmp_path, bad_step)


def test_exploding_lr_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    from jepa_lite.cluster.run_folder import RunFolder
    from jepa_lite.core.train import train

    with pytest.raises(FloatingPointError, match=r"step (\d+)") as err:
        train(
            _tiny_cfg("optim.lr=1e30", "optim.start_lr=1e30"),
            dataset=_Images(),
            hooks=RunFolder(tmp_path),
            progress=False,
        )
    step = int(re.search(r"step (\d+)", str(err.value))[1])
    assert step < 12
    _assert_last_good(tmp_path, step)


if __name__ == "__main__" and sys.argv[1:] == ["zygote"]:
    _zygote()
