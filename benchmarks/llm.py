"""The llm family against the fake provider: pipeline overhead per call, and whether calibration helps.

- `llm_calls_per_s`: chat completions per second through the whole analysis (three prompts, the budget
  reservation and settlement in PostgreSQL, the SDK, parsing) against the fake provider, which answers at
  once, from a process of its own (benchmarks/llm_provider.py): the family's own overhead, not model time.
- `brier_skill_llm_raw` / `brier_skill_llm` (calibrated, what is traded): on simulated questions (truth
  ~ Beta(2, 2), outcome drawn from it), the fake answers around the truth with noise and, like real
  language models, too sharp (`sharpness` 1.8). Skill is 1 − Brier(llm) / Brier(crowd), the crowd being
  the sim's (the truth with a logit error of sd 0.5, as services/sim/liquidity.py's traders). Calibration
  is Platt scaling fitted on the first half of the resolved questions (on their outcomes) and scored on
  the second half, by the Brier score expected given each question's hidden truth (the realized Brier is
  reported beside it).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from benchmarks.harness import private_postgres
from libs.common.config import load_settings
from libs.common.db import create_engine, session_factory
from libs.common.families import set_llm_series
from libs.common.llm import LlmClient
from libs.common.simnet import SIM_LLM_KEY
from services.signals.llm import LlmAnalyst, LlmLedger, platt_fit
from services.signals.llm_prompts import MarketBrief

N_QUESTIONS = 400
CONCURRENCY = 8
CROWD_LOGIT_SD = 0.5


def _brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def _expected_brier(p: np.ndarray, truth: np.ndarray) -> float:
    """The Brier score expected over the outcome given the hidden truth: the realized one's noise (its sd is about
    as large as the skill measured, on 200 questions) without its bias."""
    return float(np.mean(truth * (1 - p) ** 2 + (1 - truth) * p ** 2))


async def run() -> dict[str, Any]:
    set_llm_series(["KXBENCHQ"])
    rng = random.Random(23)
    truths = [min(max(rng.betavariate(2, 2), 0.03), 0.97) for _ in range(N_QUESTIONS)]
    outcomes = np.array([1.0 if rng.random() < t else 0.0 for t in truths])
    crowd = np.array([1 / (1 + math.exp(-(math.log(t / (1 - t)) + rng.gauss(0, CROWD_LOGIT_SD)))) for t in truths])
    close = datetime.now(UTC) + timedelta(hours=30)
    tickers = [f"KXBENCHQ-26DEC05-Q{i}" for i in range(N_QUESTIONS)]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(dict(zip(tickers, truths, strict=True)), f)
    provider = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.llm_provider", f.name, "--seed", "23", "--noise", "0.04",
        "--sharpness", "1.8", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert provider.stdout is not None and provider.stdin is not None
    ready: list[str] = []
    while not ready or ready[0] != "ready":  # skip whatever it logs first
        line = await asyncio.wait_for(provider.stdout.readline(), 60)
        assert line, "the fake provider exited before it was ready"
        ready = line.decode().split()
    base_url = ready[1]
    settings = load_settings(llm_series="KXBENCHQ", llm_daily_budget_usd="100000", llm_cooldown_s=0,
                             llm_max_per_market_day=1000)
    with private_postgres() as url:
        engine = create_engine(url)
        client = LlmClient(SIM_LLM_KEY, base_url=base_url, model="grok-4", structured_output=True)

        async def nothing(*_: Any) -> None:
            return None

        analyst = LlmAnalyst(settings, client, LlmLedger(session_factory(engine), "sim"), evaluate=nothing,
                             alert=nothing)
        briefs = []
        for i, ticker in enumerate(tickers):
            briefs.append(MarketBrief(ticker=ticker, title=f"Will benchmark question {i} resolve yes?",
                                      rules="Resolves Yes if it happens.", close_time=close, yes_bid=0.45,
                                      yes_ask=0.47))
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(b: MarketBrief) -> float | None:
            async with sem:
                d = await analyst.analyse(b)
            return d.p_raw

        started = time.perf_counter()
        raw = await asyncio.gather(*(one(b) for b in briefs))
        elapsed = time.perf_counter() - started
        calls = analyst.calls
        await client.aclose()
        await engine.dispose()
    provider.stdin.close()
    await provider.wait()
    os.unlink(f.name)
    set_llm_series([])
    p = np.array([x if x is not None else 0.5 for x in raw])
    half = N_QUESTIONS // 2
    a, b = platt_fit(p[:half], outcomes[:half])
    x = np.log(np.clip(p[half:], 1e-4, 1 - 1e-4) / (1 - np.clip(p[half:], 1e-4, 1 - 1e-4)))
    calibrated = 1 / (1 + np.exp(-(a * x + b)))
    test_y, test_crowd, test_t = outcomes[half:], crowd[half:], np.array(truths[half:])
    brier_crowd = _expected_brier(test_crowd, test_t)
    brier_raw, brier_cal = _expected_brier(p[half:], test_t), _expected_brier(calibrated, test_t)
    return {
        "llm_calls_per_s": round(calls / elapsed, 1),
        "llm_analyses": N_QUESTIONS,
        "llm_failed_analyses": sum(1 for r in raw if r is None),
        "brier_llm_raw": round(brier_raw, 4),
        "brier_llm_calibrated": round(brier_cal, 4),
        "brier_crowd_llm": round(brier_crowd, 4),
        "brier_skill_llm_raw": round(1 - brier_raw / brier_crowd, 4),
        # The goal's figure: what the desk trades on is the calibrated probability.
        "brier_skill_llm": round(1 - brier_cal / brier_crowd, 4),
        "llm_platt_a": round(a, 3),
        # The same on the outcomes drawn (noisier): for comparison with the resolver's figures.
        "brier_llm_realized": round(_brier(calibrated, test_y), 4),
        "brier_crowd_llm_realized": round(_brier(test_crowd, test_y), 4),
    }
