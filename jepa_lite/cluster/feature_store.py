"""Frozen features of a large dataset, extracted once by every process of a job into one store on disk.

ImageNet's 1.28M training images through ViT-H/14 give 1.28M x 1280 float32 features (6.5 GB): one process
would take hours and they do not belong in memory. `extract_to_store` splits the dataset into chunks of
consecutive images; chunk c is encoded by process c % world (bf16 on a GPU, see `features.feature_autocast`)
and written into its rows of one preallocated `.npy` file, which every reader memory-maps:

    STORE/request.json   what the store holds (weights, dataset, image size): written first, checked on resume
    STORE/features.npy   [N, D] float32        (np.load(..., mmap_mode="r"))
    STORE/labels.npy     [N] int64
    STORE/done/00012     one empty marker per finished chunk, written after its rows reach the disk
    STORE/manifest.json  N, D, chunks, size and SHA-256 of both arrays: written last, by the main process

A job preempted halfway leaves markers for the chunks it finished; the same command encodes only the others
(with any number of processes). Each process writes whole rows at byte offsets of its own chunks with plain
file writes (no shared memory map), so processes on different nodes of a shared file system never write the
same bytes. The manifest, like a checkpoint's (checkpoint.py), is what makes the store complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..core.features import _encode

CHUNK = 4096  # images per chunk: the unit of work, of progress and of resumption
FILES = ("features.npy", "labels.npy")


def sha256(path: Path, block: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _write_rows(path: Path, array: np.ndarray, first_row: int) -> None:
    """Write `array` [n, ...] over rows first_row.. of the .npy at `path` (created by np.lib.format)."""
    header = np.load(path, mmap_mode="r")  # only to find the data's byte offset and row size
    offset, row_bytes = header.offset, header.strides[0]
    del header
    with open(path, "r+b") as f:
        f.seek(offset + first_row * row_bytes)
        f.write(np.ascontiguousarray(array).tobytes())
        f.flush()
        os.fsync(f.fileno())


def _create(store: Path, request: dict, n: int, dim: int) -> None:
    (store / "done").mkdir(parents=True, exist_ok=True)
    np.lib.format.open_memmap(store / "features.npy", mode="w+", dtype=np.float32, shape=(n, dim)).flush()
    np.lib.format.open_memmap(store / "labels.npy", mode="w+", dtype=np.int64, shape=(n,)).flush()
    (store / "request.json").write_text(json.dumps(request, indent=1))


def _check_request(store: Path, request: dict) -> None:
    found = json.loads((store / "request.json").read_text())
    if found != request:
        differ = sorted(k for k in {**found, **request} if found.get(k) != request.get(k))
        raise ValueError(
            f"feature store {store} was started for other inputs ({', '.join(differ)} differ); "
            f"delete it or write the features elsewhere"
        )


def _write_manifest(store: Path, request: dict, chunks: int) -> None:
    """Check that every chunk was written, then write the manifest, atomically: the store is complete."""
    missing = [c for c in range(chunks) if not (store / "done" / f"{c:05d}").exists()]
    if missing:
        raise RuntimeError(f"feature store {store}: chunks {missing[:5]} were not written")
    arrays = {
        name: {"bytes": (store / name).stat().st_size, "sha256": sha256(store / name)} for name in FILES
    }
    shape = list(np.load(store / "features.npy", mmap_mode="r").shape)
    tmp = store / "manifest.json.tmp"
    tmp.write_text(json.dumps({"request": request, "shape": shape, "files": arrays}, indent=1))
    tmp.replace(store / "manifest.json")


def extract_to_store(
    encoder: nn.Module,
    dataset: Dataset,
    store: str | Path,
    *,
    accelerator,
    request: dict,
    batch_size: int = 256,
    chunk: int = CHUNK,
    num_workers: int = 0,
    precision: str = "auto",
    progress: bool = True,
) -> Path:
    """Encode `dataset` (items `(image, label)`) into `store` with every process of `accelerator`.

    `request` (JSON-able: weights' SHA-256, dataset, split, image size...) names what is stored; a store
    started for another request is refused. Returns the store's path once its manifest is written (every
    process waits for it). A complete store with the same request is returned as is."""
    store, n, acc = Path(store), len(dataset), accelerator
    request = {**request, "images": n, "chunk": chunk}
    if (store / "manifest.json").is_file():
        _check_request(store, request)
        return store
    if n == 0:
        raise ValueError("dataset is empty; nothing to extract")
    device, was_training = acc.device, encoder.training
    encoder.eval().to(device)
    if acc.is_main_process and not (store / "request.json").is_file():
        dim = _encode(encoder, dataset[0][0][None].to(device), precision).shape[1]
        _create(store, request, n, dim)
    acc.wait_for_everyone()
    _check_request(store, request)
    chunks = range(acc.process_index, -(-n // chunk), acc.num_processes)  # this process's share
    todo = [c for c in chunks if not (store / "done" / f"{c:05d}").exists()]
    bar = tqdm(total=len(todo), desc=f"features (process {acc.process_index})", disable=not progress)
    for c in todo:
        rows = range(c * chunk, min(n, (c + 1) * chunk))
        feats, labels = [], []
        for images, y, *_ in DataLoader(
            Subset(dataset, rows), batch_size=batch_size, num_workers=num_workers
        ):
            feats.append(_encode(encoder, images.to(device, non_blocking=True), precision).cpu())
            labels.append(torch.as_tensor(y).long())
        _write_rows(store / "features.npy", torch.cat(feats).numpy(), rows.start)
        _write_rows(store / "labels.npy", torch.cat(labels).numpy(), rows.start)
        (store / "done" / f"{c:05d}").touch()
        bar.update()
    bar.close()
    encoder.train(was_training)
    acc.wait_for_everyone()
    if acc.is_main_process:
        _write_manifest(store, request, -(-n // chunk))
    acc.wait_for_everyone()
    return store


def open_store(store: str | Path, *, verify: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """`(features [N, D] float32 memory map, labels [N] int64, manifest)` of a complete store.

    Sizes are always checked against the manifest; `verify=True` also recomputes the SHA-256 of both files
    (about 10 s per GB)."""
    store = Path(store)
    if not (store / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{store} is not a complete feature store (no manifest.json); extract it again"
        )
    manifest = json.loads((store / "manifest.json").read_text())
    for name, record in manifest["files"].items():
        path = store / name
        size = path.stat().st_size if path.is_file() else None
        if size != record["bytes"] or (verify and sha256(path) != record["sha256"]):
            raise ValueError(f"feature store {store}: {name} changed after it was written (size {size})")
    feats = np.load(store / "features.npy", mmap_mode="r")
    labels = np.load(store / "labels.npy", mmap_mode="r")
    return feats, labels, manifest


__all__ = ["CHUNK", "extract_to_store", "open_store"]
