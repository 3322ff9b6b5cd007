"""Charts for a phone: a calibration diagram and an equity curve, as PNG bytes.

Drawn with matplotlib's object API on an Agg canvas (no pyplot global state, so it is safe off the
event loop in a worker thread). Data only comes from `cmd.*` answers; nothing is computed here but
the axes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from libs.common.display import MODE_LABEL
from libs.common.money import ONE_DOLLAR


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def calibration(mode: str, families: dict[str, Sequence[dict[str, Any]]]) -> bytes:
    """Observed frequency against mean forecast per bin, one line per family; the diagonal is perfect."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for family, bins in families.items():
        pts = [(b["mean_p"], b["observed"], b["count"]) for b in bins
               if b.get("count") and b.get("mean_p") is not None and b.get("observed") is not None]
        if not pts:
            continue
        xs, ys, ns = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", label=f"{family} (n={sum(ns)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("forecast probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"[{MODE_LABEL.get(mode, mode)}] calibration")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig)


def equity(mode: str, points: Sequence[dict[str, Any]]) -> bytes:
    """Equity in dollars over time."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    xs = [datetime.fromisoformat(str(p["ts"])) for p in points]
    ys = [p["equity_ticks"] / ONE_DOLLAR for p in points]
    if xs:
        ax.plot(xs, ys, color="tab:blue")
        ax.fill_between(xs, ys, min(ys), alpha=0.15, color="tab:blue")
    else:
        ax.text(0.5, 0.5, "no equity snapshots yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("equity ($)")
    ax.set_title(f"[{MODE_LABEL.get(mode, mode)}] equity")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


__all__ = ["calibration", "equity"]
