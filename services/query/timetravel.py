"""as_of (valid time) and known_at (knowledge time) views, recomputed from stored events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.http.problems import Problem
from services.query.reads import Reads


def objective_at(
    r: Reads, objective_id: str, as_of: datetime | None, known_at: datetime | None
) -> dict[str, Any] | None:
    raise Problem(501, "as_of/known_at are not available yet")


def kpi_at(r: Reads, kpi_id: str, as_of: datetime) -> dict[str, Any] | None:
    raise Problem(501, "as_of is not available yet")
