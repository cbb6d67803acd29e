"""Checkpoints: atomic accelerate state + our step counter, `--resume auto`, and safetensors export.

A checkpoint is a folder `ckpt-00001234/` holding accelerate's state (model, optimizer, grad scaler, RNG of
every process) and `trainer_state.json` (step, config). It is written under a temporary name and renamed
only when complete, so a crash mid-write never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint", "export_weights", "load_weights"]

STATE_FILE = "trainer_state.json"


def _ckpt_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp"))


def save_checkpoint(accelerator, run_dir: str | Path, step: int, state: dict, keep_last: int = 2) -> Path:
    """Save accelerate's state and `state` (must contain 'step') atomically to run_dir/ckpt-<step>; prune old ones.

    Every process must call this (each saves its own RNG state)."""
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:08d}"
    tmp = run_dir / f"ckpt-{step:08d}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # atomic on one filesystem: the folder appears complete or not at all
        for old in _ckpt_dirs(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run (one with its trainer state written), or None."""
    done = [p for p in _ckpt_dirs(Path(run_dir)) if (p / STATE_FILE).is_file()]
    return done[-1] if done else None


def load_checkpoint(accelerator, ckpt_dir: str | Path) -> dict:
    """Restore accelerate's state from a checkpoint folder and return our trainer state (with 'step').

    Any problem (missing folder, torn or mismatched files) stops with an error naming the folder: a failed
    resume must never silently restart from scratch."""
    ckpt_dir = Path(ckpt_dir)
    state_file = ckpt_dir / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_dir} is incomplete or missing: no {STATE_FILE} in it")
    try:
        state = json.loads(state_file.read_text())
        accelerator.load_state(str(ckpt_dir))
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        raise RuntimeError(f"cannot resume from checkpoint {ckpt_dir}: {type(err).__name__}: {err}") from err
    return state


def export_weights(module: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write a module's state dict as safetensors (contiguous CPU tensors), with string metadata."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def load_weights(module: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load safetensors weights into a module (no pickle involved, so no code can run from the file)."""
    state = load_file(str(path))
    module.load_state_dict({k: v.to(torch.get_default_dtype()) if v.is_floating_point() else v
                            for k, v in state.items()}, strict=strict)  # fmt: skip
    return module
