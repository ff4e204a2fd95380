"""The product's arithmetic: pure, deterministic folds and rules.

No I/O and no clock reads: time always comes in as an argument (timezone-aware, UTC).
The processor and the `as_of` query call these same functions, so there is one arithmetic.
"""
