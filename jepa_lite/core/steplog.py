"""What a training step leaves behind: the per-step CSV (crash-safe, trimmed on resume), the progress bar and
the throughput figures (images/s, model TFLOP/s, MFU from the analytic FLOPs of flops.py)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import Config
from .flops import mfu


def _throughput(img_per_s_device: float, flops_per_image: float, device_name: str) -> dict[str, float]:
    """Per-device images/s, model TFLOP/s and MFU (nan where the device's peak or the FLOPs are unknown)."""
    flops_per_s = img_per_s_device * flops_per_image
    util = mfu(flops_per_s, device_name) if math.isfinite(flops_per_s) else None
    return {
        "img_per_s_device": img_per_s_device,
        "tflops": flops_per_s / 1e12,
        "mfu": math.nan if util is None else util,
    }


class _CsvLog:
    """Per-step metrics CSV; on resume, rows after the checkpoint's step are dropped (they will be redone)."""

    FIELDS = [
        "step",
        "loss",
        "lr",
        "wd",
        "momentum",
        "img_per_s",
        "time",
        "img_per_s_device",
        "tflops",
        "mfu",
    ]

    def __init__(self, path: Path, keep_until: int) -> None:
        rows = _read_rows(path, keep_until)
        tmp = path.with_name(path.name + ".tmp")  # rewritten beside and renamed: a crash never loses rows
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in self.FIELDS} for r in rows)
        os.replace(tmp, path)
        self.file = open(path, "a", newline="")  # noqa: SIM115 - closed by close()
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)

    def write(self, row: dict) -> None:
        self.writer.writerow({k: row[k] for k in self.FIELDS})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _read_rows(path: Path, keep_until: int) -> list[dict]:
    if keep_until <= 0 or not path.is_file():
        return []
    with open(path, newline="") as f:  # a row cut short by a crash has missing (None) fields: dropped
        return [r for r in csv.DictReader(f) if None not in r.values() and int(r["step"]) < keep_until]


def _read_history(run_dir: Path, keep_until: int) -> list[dict]:
    rows = _read_rows(run_dir / "metrics.csv", keep_until)
    return [{k: (int(v) if k == "step" else float(v or "nan")) for k, v in r.items()} for r in rows]


class StepLogger:
    """Everything a step reports, in one place: the history rows `train` returns (every process), the
    metrics CSV and the progress bar (main process; the bar's figures refresh every `log_every` steps).

    Iterate it for the steps `start .. end-1`; `log(step, loss, values, seconds)` after each.
    `flops_per_image`: the step's model FLOPs per image, computed where the run's collator is built."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path | None,
        *,
        start: int,
        end: int,
        total: int,
        main: bool,
        progress: bool,
        device: torch.device,
        num_processes: int,
        flops_per_image: float = math.nan,
    ) -> None:
        self.history = _read_history(run_dir, start) if run_dir is not None and start > 0 else []
        self.bar = tqdm(
            range(start, end),
            initial=start,
            total=total,
            disable=not (progress and main),
            desc=f"{cfg.method.name} {cfg.name}",
            dynamic_ncols=True,
        )
        self.csv = (
            _CsvLog(run_dir / "metrics.csv", keep_until=start) if run_dir is not None and main else None
        )
        self.main, self.every, self.batch = main, cfg.log_every, cfg.optim.global_batch
        self.per_device = cfg.optim.global_batch / num_processes
        self.flops_per_image = flops_per_image  # of one step, analytic (nan where unknown): MFU
        self.device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def __iter__(self):
        return iter(self.bar)

    def log(self, step: int, loss: float, values: dict, seconds: float) -> dict:
        """The step's row: loss, schedule values, throughput; kept, written and shown."""
        row = {
            "step": step,
            "loss": loss,
            **values,
            "img_per_s": self.batch / seconds,
            "time": seconds,
            **_throughput(self.per_device / seconds, self.flops_per_image, self.device_name),
        }
        self.history.append(row)
        if self.main:
            if self.csv:
                self.csv.write(row)
            if step % self.every == 0:
                mfu_shown = {"mfu": f"{100 * row['mfu']:.1f}%"} if math.isfinite(row["mfu"]) else {}
                self.bar.set_postfix(
                    loss=f"{loss:.4f}",
                    lr=f"{values['lr']:.2e}",
                    refresh=False,
                    **{"img/s/dev": f"{row['img_per_s_device']:.0f}"},
                    **mfu_shown,
                )
        return row

    def close(self) -> None:
        self.bar.close()
        if self.csv:
            self.csv.close()
