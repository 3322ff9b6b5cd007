"""The NWS Daily Climate Report (CLI) as data: climate day, maximum and minimum, and what kind of issuance it is.

Layout (data_sources.md §B2, checked against real products): a WMO line (`CDUS41 KOKX 030616`, a `CCA`
or `RRA` suffix on corrections and delayed issues), the AFOS id (`CLINYC`), the issuing office and
local issue time, a headline `...THE CENTRAL PARK NY CLIMATE SUMMARY FOR JANUARY 2 2013...` (may end
with `CORRECTION`) whose date is the climate day, an optional `VALID TODAY AS OF 0500 PM LOCAL TIME.`
(an intermediate issue: the day is not over, its maximum can still rise), then a `TEMPERATURE (F)`
block with a `YESTERDAY` or `TODAY` period label and `MAXIMUM <obs> <time> <record> ...` rows.

Quirks handled: `MM` is missing (no value, not zero); a value may carry a record flag (`102R`); times
come as `301 PM`, `3:01 PM` or `MM`; several issuances per day, so the headline date — not the issue
date — is the day. Anything else that does not match is refused with a reason (`ReportError`), never
guessed: a missing headline, no temperature block, a maximum that is not a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time
from typing import Literal

Kind = Literal["intermediate", "final", "correction"]

_MONTHS = {m: i for i, m in enumerate(("JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST",
                                        "SEPTEMBER", "OCTOBER", "NOVEMBER", "DECEMBER"), start=1)}
# Bounded and line-local on purpose: `.+?` or `^\s*` over a long garbage line (or a run of blank lines) makes the
# search quadratic — 160 KB of "...THE X " took minutes.
_HEADLINE = re.compile(r"\.\.\.\s*THE\s+(?P<name>.{1,80}?)\s+CLIMATE\s+SUMMARY\s+FOR\s+(?P<month>[A-Z]+)"
                       r"\s+(?P<day>\d{1,2}),?\s+(?P<year>\d{4})(?P<tail>[^\n]*)")
_VALID = re.compile(r"VALID\s+(?P<today>TODAY\s+)?AS\s+OF\s+(?P<hhmm>\d{3,4})\s*(?P<ampm>[AP]M)")
_WMO = re.compile(r"^[ \t]*[A-Z]{4}\d{2}[ \t]+[A-Z]{4}[ \t]+\d{6}(?:[ \t]+(?P<bbb>[A-Z]{3}))?[ \t]*$", re.M)
_AFOS = re.compile(r"^[ \t]*CLI(?P<loc>[A-Z0-9]{3,4})[ \t]*$", re.M)
_VALUE = re.compile(r"^(?P<n>-?\d{1,3})(?P<flag>R?)$")
_BLOCK_END = re.compile(r"\n\s*(?:PRECIPITATION|SNOWFALL|DEGREE DAYS|WIND|SKY COVER|RELATIVE HUMIDITY)\b|\n\s*\n\s*\n")
_TIME = re.compile(r"^(?P<h>\d{1,2}):?(?P<m>\d{2})$")


class ReportError(ValueError):
    """The product is not a CLI we can read; the message says what is missing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClimateReport:
    """One parsed CLI issuance."""

    cli_code: str | None  # the AFOS id, e.g. CLINYC
    station_name: str
    climate_date: date  # the day in the headline (local standard time)
    kind: Kind
    period: Literal["today", "yesterday"] | None
    valid_as_of: time | None  # intermediate issues: the local standard time the values are valid to
    max_temp_f: int | None  # None for MM
    max_temp_time: time | None  # local standard time of the maximum, when given
    max_is_record: bool
    min_temp_f: int | None


def parse(text: str) -> ClimateReport:
    """Parse a CLI bulletin, or raise `ReportError` saying why it cannot be read."""
    t = text.replace("\r", "").upper()
    head = _HEADLINE.search(t)
    if head is None:
        raise ReportError("no '...THE <STATION> CLIMATE SUMMARY FOR <MONTH> <D> <YYYY>...' headline")
    month = _MONTHS.get(head["month"])
    if month is None:
        raise ReportError(f"headline month {head['month']!r} is not a month")
    try:
        day = date(int(head["year"]), month, int(head["day"]))
    except ValueError as e:
        raise ReportError(f"headline date is not a date: {e}") from None
    wmo = _WMO.search(t)
    correction = "CORRECTION" in head["tail"] or bool(wmo and (wmo["bbb"] or "").startswith("CC"))
    valid = _VALID.search(t)
    block = _temperature_block(t)
    period: Literal["today", "yesterday"] | None = None
    for line in block.splitlines():
        word = line.strip()
        if word in ("TODAY", "YESTERDAY"):
            period = "today" if word == "TODAY" else "yesterday"
            break
    mx, mx_time, record = _row(block, "MAXIMUM")
    mn, _, _ = _row(block, "MINIMUM")
    intermediate = valid is not None and (valid["today"] is not None or period == "today")
    kind: Kind = "correction" if correction else "intermediate" if intermediate else "final"
    afos = _AFOS.search(t)
    return ClimateReport(cli_code=f"CLI{afos['loc']}" if afos else None, station_name=head["name"].strip(),
                         climate_date=day, kind=kind, period=period,
                         valid_as_of=_clock(valid["hhmm"], valid["ampm"]) if valid else None,
                         max_temp_f=mx, max_temp_time=mx_time, max_is_record=record, min_temp_f=mn)


def _temperature_block(t: str) -> str:
    start = t.find("TEMPERATURE (F)")
    if start < 0:
        raise ReportError("no 'TEMPERATURE (F)' block")
    rest = t[start + len("TEMPERATURE (F)"):]
    # The block ends at the next section header (PRECIPITATION, SNOWFALL, DEGREE DAYS ...) or a blank run.
    end = _BLOCK_END.search(rest)
    return rest[:end.start()] if end else rest


def _row(block: str, name: str) -> tuple[int | None, time | None, bool]:
    """(value, time, record flag) of the first `name` row; MM → None. A row that is not there is an error."""
    m = re.search(rf"^[ \t]*{name}[ \t]+(?P<rest>.*)$", block, re.M)
    if m is None:
        raise ReportError(f"no {name} row in the temperature block")
    tokens = m["rest"].split()
    if not tokens:
        raise ReportError(f"the {name} row is empty")
    if tokens[0] == "MM":
        return None, None, False
    v = _VALUE.match(tokens[0])
    if v is None:
        raise ReportError(f"the {name} value {tokens[0]!r} is not a whole °F")
    n = int(v["n"])
    if not -100 <= n <= 150:  # three digits fit the layout, not the weather: 999 is a garbled product
        raise ReportError(f"the {name} value {tokens[0]!r} is not a plausible °F")
    when = None
    if len(tokens) >= 3 and tokens[2] in ("AM", "PM") and _TIME.match(tokens[1]):
        tm = _TIME.match(tokens[1])
        assert tm is not None
        when = _clock(tm["h"] + tm["m"], tokens[2])
    return n, when, v["flag"] == "R"


def _clock(hhmm: str, ampm: str) -> time | None:
    h, m = int(hhmm[:-2]), int(hhmm[-2:])
    if not (1 <= h <= 12 and 0 <= m < 60):
        return None
    return time((h % 12) + (12 if ampm == "PM" else 0), m)


__all__ = ["ClimateReport", "Kind", "ReportError", "parse"]
