"""A run kept in a folder: the cluster machinery plugged into the core's one training loop.

`train(cfg, hooks=RunFolder(run_dir, resume="auto"))` takes the folder's lock (runlock.py) and catches stop
requests (preempt.py) in the loop's ExitStack, writes `config.yaml`, resumes from the newest complete
checkpoint, writes one every `cfg.ckpt_every` steps and at the end (checkpoint.py), turns a stop request
into a checkpoint and `Preempted`, and, when another process of the job dies, raises an error that says
where to resume from."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch.distributed as dist
import yaml
from accelerate import Accelerator

from ..core.config import Config, config_to_dict
from ..core.train import RunHooks
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .preempt import Preempted, StopRequests
from .runlock import RunLock

__all__ = ["RunFolder"]


class RunFolder(RunHooks):
    """`run_dir`: the run folder (None: no lock and no checkpoints, but `resume` from a checkpoint folder and
    stop requests by signal, which end the run with `Preempted` and no checkpoint).
    `resume`: a checkpoint folder, or 'auto' for the newest complete one in run_dir (none -> fresh start).
    `verbose`: say which checkpoint the run resumed from."""

    def __init__(
        self, run_dir: str | Path | None, *, resume: str | Path | None = None, verbose: bool = True
    ) -> None:
        if str(resume) == "auto" and run_dir is None:
            raise ValueError("resume='auto' needs run_dir, the run folder to look for checkpoints in")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume, self.verbose = resume, verbose
        # set by open(), when the loop has made the accelerator and entered the lock and the stop handler
        self.acc: Accelerator | None = None
        self.cfg: Config | None = None
        self.lock: RunLock | None = None
        self.requests: StopRequests | None = None

    def open(self, acc: Accelerator, cfg: Config, stack: contextlib.ExitStack) -> int:
        self.acc, self.cfg, main = acc, cfg, acc.is_main_process
        self.meta = {"config": config_to_dict(cfg)}
        # the lock first: another live run in this folder stops us before anything is read or written
        if self.run_dir is not None and main:
            self.lock = stack.enter_context(RunLock(self.run_dir))
        watched = self.run_dir if main else None  # one process watches the PREEMPT file
        self.requests = stack.enter_context(StopRequests(watched))
        self.requests.clear_file()  # a request left over from before this run started is not for it
        if self.lock is not None:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.meta["config"], sort_keys=False))
        return self._resume()

    def _resume(self) -> int:
        """Load the checkpoint `resume` names (for 'auto', the run's newest complete one, saying which on the
        main process); the step to start from."""
        if self.resume is None:
            return 0
        main = self.acc.is_main_process
        if str(self.resume) == "auto":
            ckpt = latest_checkpoint(self.run_dir)
            if main:
                if ckpt is not None:
                    found = f"resuming from {ckpt}"
                else:
                    found = f"no complete checkpoint in {self.run_dir}: starting fresh"
                print(f"--resume auto: {found}", flush=True)
            if ckpt is None:
                return 0
        else:
            ckpt = Path(self.resume)
        start = load_checkpoint(self.acc, ckpt)["step"]
        if main and self.verbose:
            print(f"resumed from {ckpt} at step {start}")
        return start

    def checkpoint(self, done: int) -> Path | None:
        if self.run_dir is None:
            return None
        return save_checkpoint(self.acc, self.run_dir, done, self.meta, keep_last=self.cfg.keep_last)

    def stop_requested(self) -> bool:
        return self.requests.reason() is not None

    def after_step(self, done: int, total: int, stop: bool) -> None:
        """Heartbeat; on a stop request a checkpoint and `Preempted`; else a checkpoint every ckpt_every."""
        if self.lock is not None:
            self.lock.heartbeat()
        if stop and done < total:
            ckpt = self.checkpoint(done)
            reason = self.requests.reason() or "another process was asked to stop"
            self.requests.clear_file()
            raise Preempted(done, ckpt, reason)
        if self.cfg.ckpt_every and done % self.cfg.ckpt_every == 0 and done < total:
            self.checkpoint(done)

    def close(self, done: int) -> None:
        self.checkpoint(done)
        self.requests.clear_file()  # a request that came too late to matter: the run is complete

    def failed(self, err: Exception, reached: int) -> Exception | None:
        """With several processes, a collective that failed because another one died becomes an error that
        names the newest complete checkpoint. Printed at once, while SIGTERM is still caught: the launcher
        terminates the survivors right after a death, often before a traceback would be printed."""
        if self.acc.num_processes == 1 or not _lost_a_process(err):
            return None
        last = latest_checkpoint(self.run_dir, verify=False) if self.run_dir is not None else None
        msg = (
            f"process {self.acc.process_index} of {self.acc.num_processes} lost contact with the others at "
            f"step {reached}: another process died or its node was lost ({type(err).__name__}: "
            f"{str(err)[:300]}). The newest complete checkpoint is {last or '(none)'}: restart the job with "
            "--resume auto"
        )
        print(msg, file=sys.stderr, flush=True)
        return RuntimeError(msg)


def _lost_a_process(err: BaseException) -> bool:
    """Did a collective fail because another process is gone (gloo/NCCL errors, a collective timeout)?"""
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return any(
        s in text for s in ("connection closed by peer", "connection reset", "gloo", "nccl", "timed out")
    )
