"""Settlement stations of Kalshi's daily-high series (data_sources.md B6; kalshi_api.md §9.1).

Confidence: KXHIGHNY (KNYC, Central Park) and KXHIGHCHI (KMDW, Midway — not O'Hare) were seen in real
API payloads; the rest come from third-party tables. Always prefer what the live series says
(`settlement_sources`, `rules_primary`); this table gives coordinates and the time zone whose
standard offset defines the climate day.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Station:
    """One settlement station."""

    series: str
    city: str  # subject token for md.wx.forecast.<city>
    icao: str
    cli: str  # the CLI location code ({LOC} in /products/types/CLI/locations/{LOC})
    lat: float
    lon: float
    tz: str


STATIONS: tuple[Station, ...] = (
    Station("KXHIGHNY", "nyc", "KNYC", "NYC", 40.779, -73.969, "America/New_York"),
    Station("KXHIGHCHI", "chi", "KMDW", "MDW", 41.786, -87.752, "America/Chicago"),
    Station("KXHIGHMIA", "mia", "KMIA", "MIA", 25.788, -80.317, "America/New_York"),
    Station("KXHIGHAUS", "aus", "KAUS", "AUS", 30.183, -97.680, "America/Chicago"),
    Station("KXHIGHDEN", "den", "KDEN", "DEN", 39.847, -104.656, "America/Denver"),
    Station("KXHIGHLAX", "lax", "KLAX", "LAX", 33.938, -118.389, "America/Los_Angeles"),
    Station("KXHIGHPHIL", "phl", "KPHL", "PHL", 39.873, -75.227, "America/New_York"),
    Station("KXHIGHTHOU", "hou", "KHOU", "HOU", 29.638, -95.282, "America/Chicago"),
    Station("KXHIGHTDC", "dca", "KDCA", "DCA", 38.848, -77.034, "America/New_York"),
    Station("KXHIGHTPHX", "phx", "KPHX", "PHX", 33.428, -112.004, "America/Phoenix"),
    Station("KXHIGHTSEA", "sea", "KSEA", "SEA", 47.445, -122.314, "America/Los_Angeles"),
)
BY_SERIES = {s.series: s for s in STATIONS}
BY_ICAO = {s.icao: s for s in STATIONS}
