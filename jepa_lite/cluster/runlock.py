"""One run per run folder: a lock file that a second trainer pointed at the same folder respects.

`run_dir/.lock` holds the owner's host, pid and start time. A second run refuses with a message naming them,
so two runs never mix checkpoints or metrics. A lock whose owner is gone (killed, crashed, its node lost)
does not hold forever: on the same host a dead pid frees it at once; from another host the owner's heartbeat
(the file's modification time, refreshed as it trains) must be older than `STALE_AFTER` seconds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "STALE_AFTER", "RunFolderInUse", "RunLock"]

LOCK_FILE = ".lock"
STALE_AFTER = 600.0  # seconds without a heartbeat after which another host's lock is taken over
HEARTBEAT_EVERY = 30.0  # seconds between refreshes of the lock file's modification time


class RunFolderInUse(RuntimeError):
    """Another live run holds the run folder."""


def _alive(holder: dict, age: float) -> bool:
    """Is the lock's owner still running? Same host: its pid exists. Other host: a recent heartbeat."""
    if holder.get("host") != socket.gethostname():
        return age < STALE_AFTER
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds that pid: it exists
        return True
    return True


class RunLock:
    """`with RunLock(run_dir):` holds run_dir for this process; a second holder, even in the same process,
    is refused."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.owned = False  # this object took the lock and releases it
        self._beat = 0.0

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(5):  # a lock being taken over or still being written: look again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text())
                    age = time.time() - self.path.stat().st_mtime
                except (OSError, ValueError):
                    time.sleep(0.1)
                    continue
                if _alive(holder, age):
                    raise RunFolderInUse(
                        f"run folder {self.path.parent} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} (since {holder.get('since')}, alive {age:.0f} s ago): two "
                        "runs in one folder would mix their checkpoints. Wait for it, stop it, or choose "
                        "another --name / --out."
                    ) from None
                print(
                    f"run folder {self.path.parent}: taking over the lock of process {holder.get('pid')} on "
                    f"{holder.get('host')}, which is gone",
                    file=sys.stderr,
                    flush=True,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.owned = True
            self._beat = time.monotonic()
            return self
        raise RunFolderInUse(
            f"could not take the lock {self.path}: it keeps changing (another run starting?)"
        )

    def heartbeat(self) -> None:
        """Refresh the lock's modification time (at most every HEARTBEAT_EVERY s): others see us alive."""
        if self.owned and time.monotonic() - self._beat > HEARTBEAT_EVERY:
            self._beat = time.monotonic()
            try:
                os.utime(self.path)
            except FileNotFoundError:  # removed by hand: take it again rather than run unprotected
                self.acquire()

    def release(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
        self.owned = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
