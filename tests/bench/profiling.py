"""Optional py-spy profiles of benchmark phases: set OKR_BENCH_PROFILE to a directory, and
OKR_BENCH_PYSPY_FLAGS for more of py-spy's options (e.g. "--threads --gil": per thread, only
while holding the GIL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROFILE_DIR = os.environ.get("OKR_BENCH_PROFILE")


def start_profile(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """Start `py-spy record` on `pid` when OKR_BENCH_PROFILE names a directory."""
    if not PROFILE_DIR:
        return None
    Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--subprocesses", "-o", str(Path(PROFILE_DIR) / f"{name}.txt"), "--nonblocking",
         *os.environ.get("OKR_BENCH_PYSPY_FLAGS", "").split()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    """Let py-spy write its output and exit."""
    if spy is not None:
        spy.send_signal(2)  # SIGINT
        spy.wait(30)
