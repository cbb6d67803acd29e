"""Preemption: a scheduler about to stop a job asks the trainer for a checkpoint first.

SIGTERM and SIGUSR1 (what SLURM sends before a time limit or a requeue), or a file named `PREEMPT` in the run
folder (what `scripts/slurm/pretrain.sbatch` writes, since launchers do not pass signals on to every
worker), make `train` with a `RunFolder` (run_folder.py) finish the step it is in, write a checkpoint on
every process and raise `Preempted`; `scripts/pretrain.py` then exits with `REQUEUE_STATUS`. A run resumed
with `--resume auto` continues exactly where it stopped. Every process learns of a request made to any one of
them at the next step boundary. A run without a `RunFolder` (a notebook's) leaves both signals alone.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

__all__ = ["REQUEUE_STATUS", "STOP_FILE", "Preempted", "StopRequests"]

REQUEUE_STATUS = 75  # EX_TEMPFAIL of sysexits.h: a temporary failure, try again (the sbatch script requeues)
STOP_FILE = "PREEMPT"
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Training stopped on request after `step` steps; `checkpoint` holds them (None without a run folder)."""

    def __init__(self, step: int, checkpoint: Path | None, reason: str) -> None:
        where = f"checkpoint {checkpoint} written" if checkpoint else "no run folder, so no checkpoint"
        super().__init__(f"preempted ({reason}) after step {step}: {where}; resume with --resume auto")
        self.step, self.checkpoint, self.reason = step, checkpoint, reason


class StopRequests:
    """`with StopRequests(run_dir) as stop:` catches SIGTERM/SIGUSR1 while training (the previous handlers
    come back afterwards); `stop.reason()` says what asked for a stop, or None."""

    def __init__(self, run_dir: str | Path | None, *, watch_file: bool = True) -> None:
        self.file = Path(run_dir) / STOP_FILE if run_dir is not None and watch_file else None
        self.signal: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def reason(self) -> str | None:
        if self.signal:
            return self.signal
        if self.file is not None and self.file.exists():
            return f"{self.file} exists"
        return None

    def clear_file(self) -> None:
        """Remove the stop file once acted on, so the resumed run does not stop at once."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)
