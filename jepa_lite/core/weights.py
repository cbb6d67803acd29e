"""Weights in and out as safetensors: a trained encoder written once, read by notebooks, probes and interop.

safetensors holds tensors and string metadata only, so loading a file can never run code (a pickle can).
A file is checked against its own header before it is read, so a truncated copy fails with its name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["WeightsError", "check_safetensors", "export_weights", "load_weights"]


class WeightsError(RuntimeError):
    """A weights file that cannot be read: the message names the file and what is wrong with it."""


def check_safetensors(path: Path) -> dict:
    """Header of a safetensors file {name: {dtype, shape, data_offsets}}, after checking it is complete."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or 8 + n > size:
            raise WeightsError(f"{path} is truncated or not a safetensors file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise WeightsError(f"{path} has a corrupt safetensors header: {err}") from None
    if size != 8 + n + end:
        raise WeightsError(
            f"{path} is truncated or corrupt: its header describes {8 + n + end} bytes, the file has {size}"
        )
    return header


def export_weights(module: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write a module's state dict as safetensors (contiguous CPU tensors) with string metadata, atomically:
    under a temporary name, then renamed, so a crash never leaves half a file under the real name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)
    return path


def load_weights(module: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load safetensors weights into a module, cast to the default float dtype (float16 files included)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    check_safetensors(path)
    state = load_file(str(path))
    module.load_state_dict(
        {k: v.to(torch.get_default_dtype()) if v.is_floating_point() else v for k, v in state.items()},
        strict=strict,
    )
    return module
