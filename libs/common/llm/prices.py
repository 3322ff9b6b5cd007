"""What an LLM call costs: a price per model in $0.0001 ticks per million tokens, and the rounding rule.

Prices are integers like all money here (DESIGN §3): "$1.25 per million tokens" is 12_500 ticks per million.
The cost of a call is the exact sum over its tokens rounded **up** once to a whole tick, so a budget built
from these costs never undercounts.

Unknown models are an error, not a guess: a forecaster that silently counts a new model as free would
blow through its budget. The operator prices it with the override string (`grok-5=4.00/20.00`), or
names a default for everything else with `*=IN/OUT` (e.g. `*=0/0` for a local server).

Sources: xAI prices from docs.x.ai (ref/telegram_llm_forecast.md §B3); the OpenAI rows from third-party
copies of OpenAI's pricing page (gpt-4o-mini $0.15/$0.60, gpt-4o $2.50/$10.00, gpt-4.1 $2.00/$8.00,
gpt-4.1-mini $0.40/$1.60), which no longer lists the 4.x family itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from libs.common.money import MoneyError, Price, format_dollars, parse_dollars

PRICES_VAR = "KDESK_LLM_PRICES"  # the setting an operator edits; named in error messages
DEFAULT_KEY = "*"
PER_TOKENS = 1_000_000


class PriceError(ValueError):
    """A price table or an override string is malformed."""


class UnknownModelPriceError(PriceError, LookupError):
    """No price is known for a model and the table has no default."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Input and output price of one model, in $0.0001 ticks per million tokens.

    `long_prompt_from` marks a long-context tier: a call whose prompt has at least that many tokens
    is billed at the `long_*` rates for all of its tokens (xAI's grok-4.3 doubles at 200k).
    """

    input_per_m: Price
    output_per_m: Price
    long_prompt_from: int | None = None
    long_input_per_m: Price | None = None
    long_output_per_m: Price | None = None

    def __post_init__(self) -> None:
        rates = (self.input_per_m, self.output_per_m, self.long_input_per_m, self.long_output_per_m)
        if any(r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 0) for r in rates):
            raise PriceError(f"prices must be non-negative int ticks per million tokens, got {self!r}")
        tier = (self.long_prompt_from, self.long_input_per_m, self.long_output_per_m)
        if any(v is None for v in tier) and any(v is not None for v in tier):
            raise PriceError("a long-context tier needs long_prompt_from, long_input_per_m and long_output_per_m")

    @classmethod
    def dollars(cls, input_usd: str, output_usd: str) -> ModelPrice:
        """Build from dollar strings per million tokens ("1.25", "2.50")."""
        return cls(parse_dollars(input_usd), parse_dollars(output_usd))

    def rates(self, prompt_tokens: int) -> tuple[Price, Price]:
        """The (input, output) rates that apply to a call with this many prompt tokens."""
        if self.long_prompt_from is not None and prompt_tokens >= self.long_prompt_from:
            assert self.long_input_per_m is not None and self.long_output_per_m is not None
            return self.long_input_per_m, self.long_output_per_m
        return self.input_per_m, self.output_per_m

    def cost_ticks(self, prompt_tokens: int, completion_tokens: int) -> Price:
        """The cost of one call in ticks, rounded up to a whole tick."""
        for name, n in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise PriceError(f"{name} must be a non-negative int, got {n!r}")
        rate_in, rate_out = self.rates(prompt_tokens)
        return -(-(prompt_tokens * rate_in + completion_tokens * rate_out) // PER_TOKENS)

    def __str__(self) -> str:
        return f"{format_dollars(self.input_per_m)}/{format_dollars(self.output_per_m)}"


# grok-4.3 is xAI's current text model. Since the 2026-05-15 retirement the old slugs redirect to it and bill
# at its prices, and `grok-4`, `grok-4-latest`, `grok-3-mini` are listed as its aliases (§B3).
_GROK_43 = ModelPrice(12_500, 25_000, long_prompt_from=200_000, long_input_per_m=25_000, long_output_per_m=50_000)
_GROK_420 = ModelPrice.dollars("1.25", "2.50")

DEFAULT_PRICES: Mapping[str, ModelPrice] = MappingProxyType({
    "grok-4.3": _GROK_43,
    "grok-4.3-latest": _GROK_43,
    **dict.fromkeys(("grok-4", "grok-4-latest", "grok-4-0709", "grok-3", "grok-3-mini", "grok-code-fast-1",
                     "grok-4-1-fast-reasoning", "grok-4-1-fast-non-reasoning",
                     "grok-4-fast-reasoning", "grok-4-fast-non-reasoning"), _GROK_43),
    "grok-4.20": _GROK_420,
    "grok-4.20-0309-reasoning": _GROK_420,
    "grok-4.20-0309-non-reasoning": _GROK_420,
    "grok-4.5": ModelPrice.dollars("2.00", "6.00"),
    "gpt-4o-mini": ModelPrice.dollars("0.15", "0.60"),
    "gpt-4o": ModelPrice.dollars("2.50", "10.00"),
    "gpt-4.1": ModelPrice.dollars("2.00", "8.00"),
    "gpt-4.1-mini": ModelPrice.dollars("0.40", "1.60"),
})


def _key(model: str) -> str:
    return model.strip().lower()


class PriceTable:
    """Prices by model name (case-insensitive), with an optional default for models not listed."""

    __slots__ = ("_default", "_prices")

    def __init__(self, prices: Mapping[str, ModelPrice] = DEFAULT_PRICES, default: ModelPrice | None = None) -> None:
        self._prices: Mapping[str, ModelPrice] = MappingProxyType({_key(m): p for m, p in prices.items()})
        self._default = default

    @classmethod
    def from_config(cls, text: str, base: Mapping[str, ModelPrice] = DEFAULT_PRICES) -> PriceTable:
        """`base` overridden by `model=IN/OUT,...` (dollars per million tokens); `*=IN/OUT` sets the default.

        An override replaces the model's whole price, long-context tier included.
        """
        prices = dict(base)
        default: ModelPrice | None = None
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            model, sep, rates = entry.partition("=")
            model, rates = model.strip(), rates.strip()
            in_s, slash, out_s = rates.partition("/")
            if not sep or not model or not slash:
                raise PriceError(f"{PRICES_VAR}: entry {entry!r} must look like 'grok-4=3.00/15.00' "
                                 "(model=input/output dollars per million tokens)")
            try:
                price = ModelPrice.dollars(in_s.strip(), out_s.strip())
            except MoneyError as e:
                raise PriceError(f"{PRICES_VAR}: entry {entry!r}: {e}") from None
            if model == DEFAULT_KEY:
                default = price
            else:
                prices[model] = price
        return cls(prices, default)

    @property
    def default(self) -> ModelPrice | None:
        """The price of models not listed, when one was configured."""
        return self._default

    def knows(self, model: str) -> bool:
        """True when `model` has a price of its own (the default does not count)."""
        return _key(model) in self._prices

    def price(self, model: str) -> ModelPrice:
        """The model's price, else the default; raises UnknownModelPriceError when neither exists."""
        found = self._prices.get(_key(model), self._default)
        if found is None:
            raise UnknownModelPriceError(
                f"no price for LLM model {model!r}: add '{model}=IN/OUT' (dollars per million tokens) to "
                f"{PRICES_VAR}, or '*=IN/OUT' to price every unlisted model"
            )
        return found

    def cost_ticks(self, model: str, prompt_tokens: int, completion_tokens: int) -> Price:
        """Cost of one call of `model` in $0.0001 ticks, rounded up."""
        return self.price(model).cost_ticks(prompt_tokens, completion_tokens)

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models, default={self._default})"


DEFAULT_TABLE = PriceTable()


def cost_ticks(model: str, prompt_tokens: int, completion_tokens: int, *, table: PriceTable = DEFAULT_TABLE) -> Price:
    """Cost of one call in $0.0001 ticks, rounded up; UnknownModelPriceError for a model without a price."""
    return table.cost_ticks(model, prompt_tokens, completion_tokens)


__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_TABLE",
    "PRICES_VAR",
    "ModelPrice",
    "PriceError",
    "PriceTable",
    "UnknownModelPriceError",
    "cost_ticks",
]
