"""Waiting on a child process's log while it keeps running."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for_log(
    log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float = 60
) -> None:
    """Until `text` appears in `log`; fails (with the log's tail) if `proc` exits first or
    the time runs out."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in: {log.read_text()[-3000:]}"
        time.sleep(0.1)
