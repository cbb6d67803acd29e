"""Checkpoints: atomic accelerate state + our step counter, and `--resume auto`.

A checkpoint is a folder `ckpt-00001234/` holding accelerate's state (model.safetensors, optimizer.bin,
random_states_<rank>.pkl, scaler.pt under fp16) and `trainer_state.json` (step, config). It is written under
`ckpt-00001234.tmp` and renamed only when complete, and old ones are renamed to `.old` before they are
deleted, so a crash at any moment leaves only folders that are complete or visibly not checkpoints.

Each checkpoint's `trainer_state.json` carries a manifest (size and SHA-256 of every file), written last.
`latest_checkpoint` verifies it and passes over a checkpoint that changed after it was written (bit rot, a
partial copy between file systems) for the previous complete one, saying so. Loading is checked file by
file before accelerate touches anything, so a truncated, missing or foreign file stops the run with its
name and the problem, never a silent fresh start. A write that fails (a full disk) removes its partial
folder and leaves the previous checkpoint the newest. Nothing is unpickled beyond
tensors and plain containers: models are safetensors, and accelerate reads the optimizer and RNG files with
`torch.load(weights_only=True)` (verified in tests/test_checkpoint.py).

Fault injection (tests only): with `JEPA_LITE_KILL_AT=POINT[:N]` set, the process SIGKILLs itself the N-th
time (default 1) it reaches POINT, one of `FAULT_POINTS`, so tests can crash a run inside a checkpoint write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import sys
import zipfile
from pathlib import Path

import torch
from accelerate.utils import load

from ..core.weights import WeightsError, check_safetensors

__all__ = [
    "CheckpointError",
    "verify_checkpoint",
    "save_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
]

STATE_FILE = "trainer_state.json"
CKPT_NAME = re.compile(r"ckpt-(\d{8})")
FAULT_ENV = "JEPA_LITE_KILL_AT"
FAULT_POINTS = (
    "ckpt_tmp_written",
    "ckpt_before_rename",
    "ckpt_renamed",
    "ckpt_pruning",
)
_fault_hits: dict[str, int] = {}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: the message names the file and what is wrong with it."""


def _fault_point(name: str) -> None:
    """SIGKILL this process here if $JEPA_LITE_KILL_AT asks for it (see the module docstring)."""
    point, _, nth = os.environ.get(FAULT_ENV, "").partition(":")
    if point == name:
        _fault_hits[name] = _fault_hits.get(name, 0) + 1
        if _fault_hits[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def _ckpt_dirs(run_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (`.tmp` and `.old` folders are not checkpoints)."""
    return sorted(p for p in Path(run_dir).glob("ckpt-*") if CKPT_NAME.fullmatch(p.name) and p.is_dir())


def _params_finite(accelerator) -> bool:
    """True if every floating-point parameter and buffer of the prepared models
    is finite (on every process)."""
    checks = []
    for model in accelerator._models:
        for t in [*model.parameters(), *model.buffers()]:
            t = t.to_local() if hasattr(t, "to_local") else t  # DTensor shards (FSDP2): check the local part
            if t.is_floating_point() and t.numel():
                checks.append(torch.isfinite(t.detach()).all())
    ok = bool(torch.stack([c.to(accelerator.device) for c in checks]).all()) if checks else True
    bad = torch.tensor(0.0 if ok else 1.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return float(bad) == 0.0


def save_checkpoint(accelerator, run_dir: str | Path, step: int, state: dict, keep_last: int = 2) -> Path:
    """Save accelerate's state and `state` atomically to run_dir/ckpt-<step>; prune all but `keep_last`.

    Every process must call this (each saves its own RNG state). Non-finite weights are never saved: a
    FloatingPointError keeps the last good checkpoint the newest one."""
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:08d}"
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    if not _params_finite(accelerator):
        last = latest_checkpoint(run_dir, verify=False)
        raise FloatingPointError(
            f"refusing to write checkpoint {final.name} at step {step}: the model holds NaN or inf values; "
            f"the last good checkpoint is {last if last else '(none)'}"
        )
    if accelerator.is_main_process:  # leftovers of a crashed save or prune
        for stale in [*run_dir.glob("ckpt-*.tmp"), *run_dir.glob("ckpt-*.old")]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    failure = None
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    except OSError as err:  # a full disk, a quota, a vanished mount: every process must learn of it
        failure = err
    failure = _agree_on_failure(accelerator, failure)
    if failure is None and accelerator.is_main_process:
        _fault_point("ckpt_tmp_written")
        try:
            manifest = {f.name: _file_record(f) for f in sorted(tmp.iterdir()) if f.is_file()}
            _write_state(tmp / STATE_FILE, {**state, "step": step, "files": manifest})
        except OSError as err:
            failure = err
    failure = _agree_on_failure(accelerator, failure)
    if failure is not None:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        last = latest_checkpoint(run_dir, verify=False)
        raise CheckpointError(
            f"could not write checkpoint {final.name} at step {step}: {failure}. Its partial folder was "
            f"removed; the newest complete checkpoint is {last or '(none)'} (free space, then resume with "
            "--resume auto)"
        ) from failure
    if accelerator.is_main_process:
        _fault_point("ckpt_before_rename")
        if final.exists():  # re-saving a step (a resumed run that ends where it started): set the old aside
            final.rename(old)
        tmp.rename(final)  # atomic on one filesystem: the folder appears complete or not at all
        _fault_point("ckpt_renamed")
        shutil.rmtree(old, ignore_errors=True)
        for prev in _ckpt_dirs(run_dir)[:-keep_last] if keep_last > 0 else []:
            trash = prev.with_name(prev.name + ".old")
            prev.rename(trash)  # atomic: a half-deleted folder never looks like a checkpoint
            _fault_point("ckpt_pruning")
            shutil.rmtree(trash, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _file_record(path: Path) -> dict:
    """Size and SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _write_state(path: Path, state: dict) -> None:
    """Write trainer_state.json and flush it to disk (an OSError, e.g. a full disk, propagates)."""
    with open(path, "w") as f:
        f.write(json.dumps(state, indent=1))
        f.flush()
        os.fsync(f.fileno())


def _agree_on_failure(accelerator, failure: OSError | None) -> OSError | None:
    """Every process learns whether any process failed (no process waits forever for a failed one)."""
    if accelerator.num_processes == 1:
        return failure
    flag = torch.tensor(0.0 if failure is None else 1.0, device=accelerator.device)
    if float(accelerator.reduce(flag, reduction="sum")) == 0.0:
        return None
    return failure or OSError(errno.EIO, "another process failed to write its part of the checkpoint")


def verify_checkpoint(ckpt_dir: str | Path) -> str | None:
    """What is wrong with a checkpoint against its manifest (a file missing, resized or changed since it was
    written), or None if it matches. Checkpoints written before manifests existed are not checked."""
    ckpt_dir = Path(ckpt_dir)
    try:
        files = json.loads((ckpt_dir / STATE_FILE).read_text()).get("files")
    except (OSError, ValueError, AttributeError) as err:
        return f"{ckpt_dir / STATE_FILE} is unreadable: {type(err).__name__}: {err}"
    for name, want in (files or {}).items():
        path = ckpt_dir / name
        if not path.is_file():
            return f"{path} is missing (its manifest lists it)"
        if path.stat().st_size != want["size"]:
            return (
                f"{path} has {path.stat().st_size} bytes, its manifest says {want['size']}: truncated or "
                "changed after it was written"
            )
        if _file_record(path)["sha256"] != want["sha256"]:
            return f"{path} differs from its manifest's checksum: changed after it was written"
    return None


def latest_checkpoint(run_dir: str | Path, *, verify: bool = True) -> Path | None:
    """The newest complete checkpoint folder of a run (trainer state written, files matching its manifest),
    or None if the run has none. A damaged checkpoint is passed over for the previous one, with a message on
    stderr; if every complete checkpoint is damaged, CheckpointError (never a silent fresh start)."""
    done = [p for p in _ckpt_dirs(Path(run_dir)) if (p / STATE_FILE).is_file()]
    if not verify:
        return done[-1] if done else None
    problems = []
    for ckpt in reversed(done):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            if problems:
                print(f"resuming from {ckpt.name}, the newest intact checkpoint", file=sys.stderr, flush=True)
            return ckpt
        problems.append(problem)
        print(f"skipping checkpoint {ckpt.name}: {problem}", file=sys.stderr, flush=True)
    if problems:
        raise CheckpointError(
            f"every complete checkpoint of {run_dir} is damaged: "
            + "; ".join(problems)
            + ". Move them aside to start afresh, or restore them from a copy."
        )
    return None


# ----------------------------------------------------------------------------------------------------------
# loading, checked file by file


def _header(path: Path) -> dict:
    """A model file's safetensors header, or CheckpointError naming what is wrong with the file."""
    try:
        return check_safetensors(path)
    except WeightsError as err:
        raise CheckpointError(str(err)) from None


def _torch_load(path: Path):
    """accelerate's loader (torch.load with weights_only=True and accelerate's numpy/RNG allow-list)."""
    try:
        return load(path, map_location="cpu")
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln] or [type(err).__name__]
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, which "
            f"weights_only=True does not unpickle (jepa_lite never writes such files): {lines[0]}"
        ) from None
    except Exception as err:  # noqa: BLE001 - truncated zip, bad magic, ...: re-raised with the file named
        raise CheckpointError(f"{path} is corrupt or truncated: {type(err).__name__}: {err}") from None


def _check_zip(path: Path) -> None:
    """torch.save writes a zip archive; a truncated one has lost its central directory at the end."""
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is truncated or not a torch.save file: {err}") from None


def _expected_files(accelerator, ckpt_dir: Path) -> dict[str, Path]:
    """What accelerate's save_state wrote for this accelerator, by kind."""
    files = {}
    for i in range(len(accelerator._models)):
        files[f"model{i}"] = ckpt_dir / (f"model_{i}.safetensors" if i else "model.safetensors")
    for i in range(len(accelerator._optimizers)):
        files[f"optimizer{i}"] = ckpt_dir / (f"optimizer_{i}.bin" if i else "optimizer.bin")
    if accelerator.scaler is not None:
        files["scaler"] = ckpt_dir / "scaler.pt"
    files["rng"] = ckpt_dir / f"random_states_{accelerator.process_index}.pkl"
    return files


def _model_mismatch(accelerator, path: Path, header: dict, index: int) -> str | None:
    """A description of how the weights in `path` differ from model `index` (keys, shapes), or None."""
    want = {
        k: list(v.shape) for k, v in accelerator.unwrap_model(accelerator._models[index]).state_dict().items()
    }
    have = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = [
        f"{k}: file {have[k]}, model {want[k]}" for k in sorted(set(want) & set(have)) if have[k] != want[k]
    ]
    if not (missing or extra or shapes):
        return None
    parts = [
        f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "",
        f"{len(extra)} unexpected keys (e.g. {extra[0]})" if extra else "",
        f"{len(shapes)} shape mismatches (e.g. {shapes[0]})" if shapes else "",
    ]
    return (
        f"{path} holds the weights of a different model than the config describes: "
        + ", ".join(p for p in parts if p)
        + ". Resume with the config the checkpoint was written with (its trainer_state.json has it)."
    )


def load_checkpoint(accelerator, ckpt_dir: str | Path) -> dict:
    """Restore accelerate's state from a checkpoint folder and return our trainer state (with 'step').

    Every file is checked first (present, complete, the model's keys and shapes, no pickled objects), so any
    problem stops with a CheckpointError naming the file: a failed resume never silently restarts."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"checkpoint folder {ckpt_dir} does not exist")
    state_file = ckpt_dir / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"checkpoint {ckpt_dir} is incomplete: {STATE_FILE} is missing")
    try:
        state = json.loads(state_file.read_text())
        int(state["step"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{state_file} is corrupt: {type(err).__name__}: {err}") from None
    state.pop("files", None)
    foreign = sorted(p.name for p in ckpt_dir.glob("custom_checkpoint_*.pkl"))
    if foreign:  # accelerate would unpickle these without the weights-only guard; jepa_lite never writes them
        raise CheckpointError(
            f"refusing to load {ckpt_dir / foreign[0]}: jepa_lite never writes custom states"
        )
    files = _expected_files(accelerator, ckpt_dir)
    for kind, path in files.items():
        if not path.is_file():
            raise CheckpointError(f"checkpoint {ckpt_dir} is incomplete: {path.name} is missing")
        if kind.startswith("model"):
            mismatch = _model_mismatch(accelerator, path, _header(path), int(kind[5:]))
            if mismatch:
                raise CheckpointError(mismatch)
        elif kind == "rng":
            _torch_load(path)  # accelerate ignores a failed RNG load; an exact resume needs it
        else:
            _check_zip(path)
    problem = verify_checkpoint(ckpt_dir)  # what the file checks cannot see: a flipped bit, a changed file
    if problem is not None:
        raise CheckpointError(problem)
    try:
        accelerator.load_state(str(ckpt_dir))
    except Exception as err:  # noqa: BLE001 - find the file, then re-raise with its name
        for kind, path in files.items():
            if kind.startswith(("optimizer", "scaler")):
                _torch_load(path)  # raises a CheckpointError naming an unreadable file
        culprit = files.get("optimizer0", ckpt_dir)
        raise CheckpointError(
            f"cannot resume from {culprit} (does it belong to another model or optimizer?): "
            f"{type(err).__name__}: {err}"
        ) from err
    for i, opt in enumerate(accelerator._optimizers):  # torch checks only the parameter counts
        inner = getattr(opt, "optimizer", opt)
        for p in (p for group in inner.param_groups for p in group["params"]):
            for key, value in inner.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                    raise CheckpointError(
                        f"{files[f'optimizer{i}']} belongs to another model: its {key!r} of shape "
                        f"{list(value.shape)} is for a parameter of shape {list(p.shape)}"
                    )
    return state
