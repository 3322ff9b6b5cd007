"""The CLI parser on bulletins written in the real NWS layout (final, intermediate, correction, MM, records)."""

from __future__ import annotations

from datetime import date, time

import pytest

from services.resolver.climate_report import ReportError, parse


def bulletin(*, wmo: str = "CDUS41 KOKX 030616", headline_date: str = "JANUARY 2 2013", tail: str = "",
             valid: str = "", period: str = "YESTERDAY", maximum: str = "33   301 PM  68    1876  39     -6       50",
             minimum: str = "27   11:59 PM 2    1879  28     -1       29") -> str:
    """A CLI product laid out as the NWS issues them (columns as in CLINYC and CLILAX products)."""
    return f"""000
{wmo}
CLINYC

CLIMATE REPORT
NATIONAL WEATHER SERVICE NEW YORK NY
116 AM EST THU JAN 3 2013

...................................

...THE CENTRAL PARK NY CLIMATE SUMMARY FOR {headline_date}...{tail}
{valid}
CLIMATE NORMAL PERIOD: 1981 TO 2010
CLIMATE RECORD PERIOD: 1869 TO 2013


WEATHER ITEM   OBSERVED TIME   RECORD YEAR NORMAL DEPARTURE LAST
                VALUE   (LST)  VALUE       VALUE  FROM      YEAR
                                                  NORMAL
...................................................................
TEMPERATURE (F)
 {period}
  MAXIMUM         {maximum}
  MINIMUM         {minimum}
  AVERAGE         30                        33     -3       40

PRECIPITATION (IN)
  YESTERDAY        0.00          1.84 1895   0.12  -0.12     0.00
"""


def test_a_final_report_for_yesterday() -> None:
    r = parse(bulletin())
    assert (r.cli_code, r.climate_date, r.kind, r.period) == ("CLINYC", date(2013, 1, 2), "final", "yesterday")
    assert (r.max_temp_f, r.max_temp_time, r.max_is_record, r.min_temp_f) == (33, time(15, 1), False, 27)
    assert r.station_name == "CENTRAL PARK NY" and r.valid_as_of is None


def test_an_intermediate_issue_then_the_final_one() -> None:
    prelim = parse(bulletin(headline_date="APRIL 28 2026", valid="VALID TODAY AS OF 0500 PM LOCAL TIME.",
                            period="TODAY", maximum="69  11:20 AM  93    2008  69      0       64"))
    final = parse(bulletin(headline_date="APRIL 28 2026", maximum="71   6:27 PM  93    2008  69      2       64"))
    assert (prelim.kind, prelim.period, prelim.valid_as_of, prelim.max_temp_f) == ("intermediate", "today",
                                                                                   time(17, 0), 69)
    assert prelim.max_temp_time == time(11, 20)
    assert (final.kind, final.climate_date, final.max_temp_f) == ("final", prelim.climate_date, 71)


def test_a_correction_by_headline_or_by_its_wmo_code() -> None:
    assert parse(bulletin(tail=" CORRECTION")).kind == "correction"
    assert parse(bulletin(wmo="CDUS41 KOKX 030745 CCA")).kind == "correction"
    assert parse(bulletin(wmo="CDUS41 KOKX 030745 RRA")).kind == "final"  # a delayed issue, not a correction


def test_missing_values_and_record_flags() -> None:
    r = parse(bulletin(maximum="MM      MM     68    1876  39     MM       50", minimum="MM"))
    assert (r.max_temp_f, r.max_temp_time, r.min_temp_f) == (None, None, None)
    rec = parse(bulletin(maximum="102R  3:01 PM  99    1993  84     18       88"))
    assert (rec.max_temp_f, rec.max_is_record, rec.max_temp_time) == (102, True, time(15, 1))
    neg = parse(bulletin(maximum="-3    MM     -1    1917  30    -33       25"))
    assert (neg.max_temp_f, neg.max_temp_time) == (-3, None)


def test_the_headline_date_is_the_climate_day_not_the_issue_date() -> None:
    r = parse(bulletin(headline_date="DECEMBER 31 2025"))  # issued Jan 3 in the header
    assert r.climate_date == date(2025, 12, 31)


@pytest.mark.parametrize(("text", "why"), [
    ("CDUS41 KOKX 030616\nCLINYC\nTEMPERATURE (F)\n  MAXIMUM 33\n", "headline"),
    (bulletin().replace("TEMPERATURE (F)", "TEMPS"), "TEMPERATURE"),
    (bulletin(maximum="HOT   301 PM"), "not a whole"),
    (bulletin(headline_date="FEBRUARY 30 2026"), "not a date"),
    (bulletin().replace("  MAXIMUM", "  HIGHEST"), "MAXIMUM"),
])
def test_malformed_products_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(ReportError, match=why):
        parse(text)
