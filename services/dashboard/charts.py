"""The page's charts as plotly figures (JSON for plotly.js): equity, P&L per day, calibration per family.

Built with `plotly.graph_objects` (which checks every property), serialized once per new answer: a figure
costs ~10 ms to build, so the service rebuilds a chart only when its source's answer changed. Data comes
from `cmd.*` answers only; dollars are the executor's integer ticks divided for the axis, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from libs.common.money import ONE_DOLLAR

_LAYOUT: dict[str, Any] = {"margin": {"l": 56, "r": 12, "t": 34, "b": 36}, "height": 250,
                           "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
                           "font": {"size": 11}, "showlegend": False}


def _json(fig: go.Figure) -> str:
    return pio.to_json(fig, validate=False, pretty=False)  # type: ignore[no-any-return]


def _empty(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)


def equity(points: Sequence[dict[str, Any]]) -> str:
    """Equity (cash + collateral + positions at their bid, the executor's definition) over the window."""
    fig = go.Figure(layout={**_LAYOUT, "title": {"text": "equity", "x": 0.01}})
    if points:
        ys = [p["equity_ticks"] / ONE_DOLLAR for p in points]
        fig.add_trace(go.Scatter(x=[p["ts"] for p in points], y=ys, mode="lines+markers" if len(ys) < 30 else "lines",
                                 line={"color": "#2563eb"}, marker={"size": 4},
                                 fill="tozeroy", fillcolor="rgba(37,99,235,0.08)",
                                 hovertemplate="%{x|%m-%d %H:%M} UTC<br>$%{y:,.2f}<extra></extra>"))
        lo, hi = min(ys), max(ys)
        pad = max((hi - lo) * 0.1, 1.0)
        fig.update_yaxes(range=[lo - pad, hi + pad], tickprefix="$", tickformat=",.2f")
        fig.update_xaxes(type="date", tickformat="%m-%d %H:%M")
    else:
        _empty(fig, "no balance snapshots yet")
    return _json(fig)


def daily(days: Sequence[dict[str, Any]]) -> str:
    """P&L per UTC day (equity change; days without snapshots are left out)."""
    fig = go.Figure(layout={**_LAYOUT, "title": {"text": "P&L per day (UTC)", "x": 0.01}})
    shown = [d for d in days if d.get("pnl_ticks") is not None]
    if shown:
        ys = [d["pnl_ticks"] / ONE_DOLLAR for d in shown]
        fig.add_trace(go.Bar(x=[d["date"] for d in shown], y=ys,
                             marker={"color": ["#16a34a" if y >= 0 else "#dc2626" for y in ys]},
                             hovertemplate="%{x}<br>%{y:+,.2f}<extra></extra>"))
        fig.update_yaxes(tickprefix="$", tickformat=",.2f")
        fig.update_xaxes(type="category")
    else:
        _empty(fig, "no P&L days yet")
    return _json(fig)


def calibration(family: str, bins: Sequence[dict[str, Any]]) -> str:
    """Observed frequency against mean forecast per bin (marker size: predictions); the diagonal is perfect."""
    fig = go.Figure(layout={**_LAYOUT, "height": 260, "title": {"text": f"{family}: calibration", "x": 0.01}})
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#9ca3af"},
                             hoverinfo="skip"))
    pts = [b for b in bins if b.get("count") and b.get("mean_p") is not None and b.get("observed") is not None]
    if pts:
        n = max(b["count"] for b in pts)
        fig.add_trace(go.Scatter(x=[b["mean_p"] for b in pts], y=[b["observed"] for b in pts], mode="lines+markers",
                                 line={"color": "#7c3aed"},
                                 marker={"size": [6 + 12 * (b["count"] / n) ** 0.5 for b in pts]},
                                 customdata=[b["count"] for b in pts],
                                 hovertemplate="forecast %{x:.2f}<br>observed %{y:.2f}<br>n=%{customdata}"
                                               "<extra></extra>"))
    else:
        fig.add_annotation(text="no resolved predictions yet", showarrow=False, x=0.5, y=0.5)
    fig.update_xaxes(range=[0, 1], title={"text": "forecast probability"})
    fig.update_yaxes(range=[0, 1], title={"text": "observed frequency"})
    return _json(fig)


__all__ = ["calibration", "daily", "equity"]
