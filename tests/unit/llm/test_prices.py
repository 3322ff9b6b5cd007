"""LLM prices: integer ticks per million tokens, rounding up, overrides, unknown models."""

from __future__ import annotations

import pytest

from libs.common.llm.prices import (
    DEFAULT_TABLE,
    PRICES_VAR,
    ModelPrice,
    PriceError,
    PriceTable,
    UnknownModelPriceError,
    cost_ticks,
)


def test_grok_43_is_priced_from_the_xai_docs() -> None:
    p = DEFAULT_TABLE.price("grok-4.3")
    assert (p.input_per_m, p.output_per_m) == (12_500, 25_000)  # $1.25 / $2.50 per million
    assert str(p) == "1.2500/2.5000"
    assert cost_ticks("grok-4.3", 100_000, 0) == 1_250  # a million prompt tokens would be the long tier
    assert cost_ticks("grok-4.3", 0, 1_000_000) == 25_000


def test_cost_is_rounded_up_once_on_the_sum() -> None:
    # 703 prompt + 254 output tokens (a captured grok-4 reply, §B3): 8.7875 + 6.35 = 15.1375 ticks -> 16.
    assert cost_ticks("grok-4.3", 703, 254) == 16
    # One token of gpt-4o-mini is 0.0015 ticks: still a whole tick, never zero.
    assert cost_ticks("gpt-4o-mini", 1, 0) == 1
    # Rounding each part up separately would give 2 here; the sum 0.0015 + 0.006 is one tick.
    assert cost_ticks("gpt-4o-mini", 1, 1) == 1
    assert cost_ticks("gpt-4o-mini", 0, 0) == 0
    # Exact amounts are not bumped: $2 + $8 for a million each way on gpt-4.1.
    assert cost_ticks("gpt-4.1", 1_000_000, 1_000_000) == 100_000


def test_long_context_tier_applies_from_200k_prompt_tokens() -> None:
    assert cost_ticks("grok-4.3", 199_999, 0) == 2_500  # 2499.9875 rounded up
    assert cost_ticks("grok-4.3", 200_000, 0) == 5_000  # $2.50 per million at >= 200k
    assert cost_ticks("grok-4.3", 200_000, 1_000_000) == 5_000 + 50_000


def test_retired_xai_slugs_bill_as_grok_43_and_names_are_case_insensitive() -> None:
    for slug in ("grok-4", "grok-4-latest", "grok-3-mini", "grok-4-0709", "GROK-4", " grok-4 "):
        assert DEFAULT_TABLE.price(slug) == DEFAULT_TABLE.price("grok-4.3"), slug
    assert DEFAULT_TABLE.price("grok-4.5") == ModelPrice(20_000, 60_000)
    assert DEFAULT_TABLE.price("grok-4.20-0309-reasoning") == ModelPrice(12_500, 25_000)
    assert DEFAULT_TABLE.price("gpt-4o") == ModelPrice(25_000, 100_000)


def test_an_unknown_model_is_an_error_naming_the_setting() -> None:
    with pytest.raises(UnknownModelPriceError) as e:
        cost_ticks("grok-9-preview", 10, 10)
    assert "grok-9-preview" in str(e.value) and PRICES_VAR in str(e.value)
    assert isinstance(e.value, LookupError) and isinstance(e.value, PriceError)
    assert not DEFAULT_TABLE.knows("grok-9-preview")


def test_override_string_replaces_and_adds_models() -> None:
    table = PriceTable.from_config("grok-4=3.00/15.00, my-local=0/0")
    assert table.price("grok-4") == ModelPrice(30_000, 150_000)
    assert table.cost_ticks("grok-4", 200_000, 0) == 6_000  # the override drops grok-4.3's long tier
    assert table.cost_ticks("my-local", 5_000_000, 5_000_000) == 0
    assert table.price("grok-4.3") == DEFAULT_TABLE.price("grok-4.3")  # untouched entries stay
    assert DEFAULT_TABLE.price("grok-4") == DEFAULT_TABLE.price("grok-4.3")  # the default table is not mutated
    with pytest.raises(UnknownModelPriceError):
        table.price("other")


def test_star_entry_is_an_explicit_default() -> None:
    table = PriceTable.from_config("*=0.10/0.20")
    assert table.default == ModelPrice(1_000, 2_000)
    assert table.cost_ticks("anything-local", 1_000_000, 1_000_000) == 3_000
    assert not table.knows("anything-local")
    assert table.price("grok-4.3") == DEFAULT_TABLE.price("grok-4.3")  # listed models keep their own price


@pytest.mark.parametrize("text", ["", " ", ",,", " , "])
def test_empty_override_keeps_the_defaults(text: str) -> None:
    table = PriceTable.from_config(text)
    assert table.price("grok-4") == DEFAULT_TABLE.price("grok-4") and table.default is None


@pytest.mark.parametrize("text", ["grok-4", "grok-4=3", "=1/2", "grok-4=abc/1", "grok-4=1/", "grok-4=-1/2",
                                  "grok-4=0.00001/1", "grok-4=$3/15"])
def test_malformed_override_entries_are_refused(text: str) -> None:
    with pytest.raises(PriceError) as e:
        PriceTable.from_config(text)
    assert PRICES_VAR in str(e.value)


@pytest.mark.parametrize(("prompt", "completion"), [(-1, 0), (0, -5), (True, 0), (1.5, 0)])
def test_token_counts_must_be_non_negative_ints(prompt: object, completion: object) -> None:
    with pytest.raises(PriceError):
        cost_ticks("grok-4.3", prompt, completion)  # type: ignore[arg-type]


def test_model_price_validates_itself() -> None:
    with pytest.raises(PriceError):
        ModelPrice(-1, 0)
    with pytest.raises(PriceError):
        ModelPrice(1, 1, long_prompt_from=10)  # a tier without its rates
    assert ModelPrice.dollars("0.15", "0.60") == ModelPrice(1_500, 6_000)
