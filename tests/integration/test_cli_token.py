"""`okrstream token create`: a token on stdout and nothing else; a bad argument is one line
on stderr, never a traceback, and creates no store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.auth.tokens import TokenStore
from services.settings import Settings

pytestmark = pytest.mark.integration


def _token_create(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OKR_DATA_DIR": str(data_dir)}
    env.pop("OKR_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "token", "create", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(("org", "given"), [("", 0), ("x" * 101, 101)])
def test_an_org_of_the_wrong_length_is_one_line_not_a_traceback(
    tmp_path: Path, org: str, given: int
) -> None:
    done = _token_create(tmp_path / "data", "--org", org, "--scopes", "read")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"okrstream: --org must be 1–100 characters (got {given})\n"
    assert not (tmp_path / "data").exists()


def test_a_token_for_a_valid_org_is_printed_alone_and_verifies(tmp_path: Path) -> None:
    org = "o" * 100  # the longest allowed
    done = _token_create(tmp_path / "data", "--org", org, "--scopes", "read,ingest")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    store = TokenStore.from_settings(Settings(data_dir=tmp_path / "data"))
    try:
        principal = store.verify(token)
    finally:
        store.close()
    assert principal is not None
    assert (principal.org_id, principal.scopes) == (org, frozenset({"read", "ingest"}))
