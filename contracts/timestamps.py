"""The one check of the datetimes and dates every API input takes (README, "Input limits").

A datetime is RFC 3339 `date-time` text: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, `T`
and `Z` in either case (RFC 3339 §5.6). Nothing else pydantic's lax parsing would read is
taken: no Unix time (a number or numeric text such as "1764565200"), no time without
seconds ("…T10:00Z"), no offset without its colon ("+0000"), no space for the `T`, no date
alone. A period date is `YYYY-MM-DD` text. Command bodies, HTTP and Kafka readings and the
read API's instants (`as_of`, `known_at`, `from`, `to`) all check with these. Imports
nothing internal.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

RFC3339_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
"""The shape of an RFC 3339 date-time (`re.fullmatch`); the ranges of its fields (month
13, hour 24, offset +24:00, …) are left to the datetime parser. ASCII digits only."""
DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""The shape of a `YYYY-MM-DD` date (`re.fullmatch`)."""

NOT_RFC3339 = (
    "must be an RFC 3339 date-time string with an offset, "
    "YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM"
)
NOT_A_DATE = "must be a date as YYYY-MM-DD text"


def rfc3339_text(value: object) -> object:
    """`value` when it is RFC 3339 date-time text (or a datetime object from a Python
    caller); ValueError otherwise. A pydantic BeforeValidator: the parse itself stays
    pydantic's."""
    if isinstance(value, str):
        if RFC3339_DATE_TIME.fullmatch(value):
            return value
    elif isinstance(value, datetime):
        return value
    raise ValueError(NOT_RFC3339)


def date_text(value: object) -> object:
    """`value` when it is `YYYY-MM-DD` text (or a date object, not a datetime, from a Python
    caller); ValueError otherwise: a number is not a Unix time, a date-time is not a date."""
    if isinstance(value, str):
        if DATE_TEXT.fullmatch(value):
            return value
    elif isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError(NOT_A_DATE)


def _utc(value: datetime) -> datetime:
    # A time near year 1 or 9999 with an offset has no UTC equivalent in `datetime`:
    # astimezone raises OverflowError, which pydantic does not turn into a validation error.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z"
        ) from None


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(rfc3339_text), AfterValidator(_utc)]
"""A timezone-aware datetime given as RFC 3339 text, normalised to UTC."""
