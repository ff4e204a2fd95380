"""The projector's cache of objective states between transactions: bounded, and resistant
to the passes that re-evaluate every objective in id order.

With more objectives than fit, a FIFO or LRU cache evicts each state shortly before the
next pass needs it again: no hits at all, and every state loaded from its snapshot
replaces another (a steady churn of long-lived objects through the heap). Here a new state
is admitted in place of the least recently used one only when that one has gone unused
for `idle_s`: the states that fit stay and hit on every pass, the others are loaded
without churn, and a working set that moves on (next quarter's objectives) replaces the
old one once the old one falls idle.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class StateCache(Generic[V]):
    """Up to `size` values by key; `now` is a monotonic clock reading in seconds."""

    def __init__(self, size: int, idle_s: float) -> None:
        self.size = size
        self.idle_s = idle_s
        # key -> (value, last used); least recently used first.
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, now: float) -> V | None:
        """The value held for `key`, marked used at `now`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries[key] = (entry[0], now)
        self._entries.move_to_end(key)
        return entry[0]

    def put_all(self, items: Iterable[tuple[str, V]], now: float) -> None:
        """Hold these values, used at `now`: a held key is updated; a new one takes a free
        place, else that of the least recently used entry if it is idle, else is left out."""
        entries = self._entries
        for key, value in items:
            if key in entries or len(entries) < self.size:
                entries[key] = (value, now)
                entries.move_to_end(key)
                continue
            if not entries:
                continue  # size 0: hold nothing
            _, (_, used) = next(iter(entries.items()))
            if now - used >= self.idle_s:
                entries.popitem(last=False)
                entries[key] = (value, now)

    def clear(self) -> None:
        self._entries.clear()
