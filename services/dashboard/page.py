"""The page's content: every panel as an HTML fragment and every chart as a plotly figure, from the sources.

One build serves both the first paint (`GET /`, fragments inlined) and each poll (`GET /api/page`, the same
fragments and figures as JSON). Fragments are rendered by Jinja2 from `panels` (autoescaped); a chart is
rebuilt only when the answer it is drawn from changed (`Answer.version`), and the browser redraws it only
when its version moved. Each build also says how old every answer it shows is (`ages_s`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import jinja2

from libs.common.events import Alert, Heartbeat, utcnow
from services.dashboard import charts, panels
from services.dashboard.sources import Answer

PANELS = ("banner", "health", "pnl", "positions", "orders", "fills", "signals", "llm", "accuracy", "alerts")


class DeskView(Protocol):
    """What the page reads: `services.dashboard.sources.Sources` (tests hand in their own)."""

    mode: str

    async def answers(self) -> dict[str, Answer]: ...

    def live_beats(self) -> tuple[list[Heartbeat], list[str]]: ...

    def last_alerts(self) -> list[Alert]: ...


@dataclass(frozen=True)
class Chart:
    """A figure (plotly JSON) for the element `chart-<id>`, placed in the container `into`."""

    version: str
    figure: str
    into: str


@dataclass
class Page:
    """Everything the page shows at one moment."""

    mode: str
    generated_at: datetime
    panels: dict[str, str]
    charts: dict[str, Chart]
    took_ms: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)
    ages_s: dict[str, float | None] = field(default_factory=dict)  # how old each answer shown is


class PageBuilder:
    """Builds `Page`s from a `DeskView`; keeps each chart's figure until its answer changes."""

    def __init__(self, env: jinja2.Environment, view: DeskView, *, clock: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.env = env
        self.view = view
        self.clock = clock
        self.monotonic = monotonic
        self._charts: dict[str, tuple[int, dict[str, Chart]]] = {}  # source -> (answer version, its charts)
        self.built = 0

    def _fragment(self, name: str, **ctx: Any) -> str:
        return self.env.get_template(f"panels/{name}.html").render(**ctx)

    def _charts_of(self, source: str, answer: Answer, make: Callable[[Any], dict[str, Chart]]) -> dict[str, Chart]:
        kept = self._charts.get(source)
        if kept is not None and kept[0] == answer.version:
            return kept[1]
        made = make(answer.value) if answer.value is not None else {}
        self._charts[source] = (answer.version, made)
        return made

    async def build(self) -> Page:
        """The page as of now (asks the sources, which answer from their caches where fresh)."""
        started = time.perf_counter()
        a = await self.view.answers()
        now = self.clock()
        mode = self.view.mode
        beats, silent = self.view.live_beats()

        def value(name: str) -> Any:
            return a[name].value if name in a else None

        def error(name: str) -> str | None:
            return a[name].error if name in a else "not asked"

        frags = {
            "banner": self._fragment("banner", b=panels.banner(mode, value("status"), error("status"),
                                                               value("control"))),
            "health": self._fragment("health", h=panels.health(beats, silent, value("ws"), now),
                                     ws_error=error("ws")),
            "pnl": self._fragment("pnl", p=panels.pnl(value("pnl")), error=error("pnl")),
            "positions": self._fragment("positions", p=panels.positions(value("positions")),
                                        error=error("positions")),
            "orders": self._fragment("orders", rows=panels.orders(value("orders"), now), error=error("orders")),
            "fills": self._fragment("fills", rows=panels.fills(value("fills")), error=error("fills")),
            "signals": self._fragment("signals", rows=panels.signals(value("signals")), error=error("signals")),
            "llm": self._fragment("llm", llm=panels.llm(value("llm")), error=error("llm")),
            "accuracy": self._fragment("accuracy", acc=panels.accuracy(value("accuracy")), error=error("accuracy")),
            "alerts": self._fragment("alerts", rows=panels.alerts(self.view.last_alerts())),
        }
        figs: dict[str, Chart] = {}
        if "pnl" in a:
            figs.update(self._charts_of("pnl", a["pnl"], lambda d, v=a["pnl"].version: {
                "equity": Chart(f"pnl-{v}", charts.equity(d.get("equity") or []), "pnl-charts"),
                "daily": Chart(f"pnl-{v}", charts.daily(d.get("days") or []), "pnl-charts")}))
        if "accuracy" in a:
            figs.update(self._charts_of("accuracy", a["accuracy"], lambda d, v=a["accuracy"].version: {
                f"cal-{f}": Chart(f"acc-{v}", charts.calibration(f, s.get("bins") or []), "cal-charts")
                for f, s in (d.get("families") or {}).items()}))
        self.built += 1
        errors = {k: v.error for k, v in a.items() if v.error}
        mono = self.monotonic()
        ages = {k: None if v.ok_at is None else round(max(0.0, mono - v.ok_at), 3) for k, v in a.items()}
        return Page(mode=mode, generated_at=now, panels=frags, charts=figs, ages_s=ages,
                    took_ms=(time.perf_counter() - started) * 1000, errors=errors)  # type: ignore[arg-type]


__all__ = ["PANELS", "Chart", "DeskView", "Page", "PageBuilder"]
