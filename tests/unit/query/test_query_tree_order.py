"""The objective tree lists siblings newest period first, then by title."""

from __future__ import annotations

from services.query.reads import _newest_first


def view(title: str, start: str) -> dict[str, object]:
    return {"id": title, "title": title, "period": {"start": start}}


def test_newest_period_first_then_title() -> None:
    ordered = _newest_first(
        [view("b", "2026-04-01"), view("z", "2026-10-01"), view("a", "2026-10-01"),
         view("c", "2026-07-01")]
    )  # fmt: skip
    assert [v["title"] for v in ordered] == ["a", "z", "c", "b"]
