"""The web dashboard: the desk on one page, from the same `cmd.<service>.*` answers the CLI and Telegram render.

Why this stack (issue 20):
- **Starlette + uvicorn**: a small ASGI app on the desk's own asyncio loop, so a page request awaits the
  desk's NATS requests directly (no thread hop, no second event loop). Streamlit, which the seed system
  used, re-runs a whole script per interaction in a server of its own and has no place for our bus, our
  health heartbeat or our login rule; FastAPI would add a schema layer the page does not need.
- **Jinja2, server-rendered**: every panel is an HTML fragment rendered in Python from the answers with
  `libs.common.display` (dollars and contracts, as in the CLI); the browser never formats money.
- **Short polling, not server-sent events**: an open page asks `GET /api/page` every
  KDESK_DASHBOARD_REFRESH_S (2 s) and swaps in the fragments and charts that changed. Each poll is one
  ordinary, measurable request (`make bench` reports its p95), a poll after a network blip simply works, and
  no long-lived stream holds up a clean stop of the service.
- **plotly.js** (through the `plotly` Python package, which builds and checks the figures and ships
  `plotly.min.js` inside its wheel: served from there, so the page works offline, no CDN): zoomable equity,
  per-day P&L and calibration charts.

Nothing here computes P&L: the executor's `pnl` and `positions` answers are shown as they are. Parts:
`access` (binding rule, tokens, sessions), `sources` (the cached answers, heartbeats and alerts),
`panels` (pure: answers → what a table shows), `charts` (pure: answers → plotly figures), `audit`
(control actions in `command_audit`), `app` (routes), `service` (wiring, uvicorn, health).
"""
