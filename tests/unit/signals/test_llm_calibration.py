"""Platt scaling of the llm family: it undoes an overconfident forecaster and leaves a calibrated one alone."""

from __future__ import annotations

import math

import numpy as np

from services.signals.llm import Calibration, platt_fit


def _draw(n: int, sharpness: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.beta(2, 2, n)
    y = (rng.random(n) < truth).astype(float)
    logit = np.log(truth / (1 - truth))
    return 1 / (1 + np.exp(-sharpness * logit)), y


def test_an_overconfident_forecaster_is_pulled_back_and_scores_better() -> None:
    p, y = _draw(4000, 2.0, 1)
    a, b = platt_fit(p[:2000], y[:2000])
    assert 0.4 < a < 0.6 and abs(b) < 0.1  # the inverse of the sharpening
    cal = Calibration(a, b, 2000)
    q = np.array([cal.apply(float(x)) for x in p[2000:]])
    assert np.mean((q - y[2000:]) ** 2) < np.mean((p[2000:] - y[2000:]) ** 2) - 0.005


def test_a_calibrated_forecaster_stays_as_it_is_and_no_fit_is_the_identity() -> None:
    p, y = _draw(4000, 1.0, 2)
    a, b = platt_fit(p, y)
    assert abs(a - 1) < 0.12 and abs(b) < 0.1
    assert Calibration().apply(0.73) == 0.73
    assert math.isclose(Calibration(1.0, 0.0, 50).apply(0.73), 0.73, rel_tol=1e-9)
