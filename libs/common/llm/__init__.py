"""LLM access for the forecaster: an OpenAI-compatible client with retries and costs, prices, answer parsing."""

from libs.common.llm.client import DEFAULT_BASE_URL, DEFAULT_MODEL, LlmClient, LlmError, LlmErrorReason, LlmResult
from libs.common.llm.parse import Estimate, FailureReason, Forecast, ParseFailure, parse_answer, response_format
from libs.common.llm.prices import ModelPrice, PriceError, PriceTable, UnknownModelPriceError, cost_ticks

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "Estimate",
    "FailureReason",
    "Forecast",
    "LlmClient",
    "LlmError",
    "LlmErrorReason",
    "LlmResult",
    "ModelPrice",
    "ParseFailure",
    "PriceError",
    "PriceTable",
    "UnknownModelPriceError",
    "cost_ticks",
    "parse_answer",
    "response_format",
]
