from __future__ import annotations

import orjson
import pytest

from deepinfra_serve.config.pricing import Pricing, PromptTokensDetails, Usage, estimated_cost

MYTHOMAX = Pricing(input_usd_per_mtok=0.08, output_usd_per_mtok=0.08)


def test_gateway_reference_breakdown() -> None:
    # The gateway reference bills 36 prompt tokens at 2.88e-06 and 9 completion at 7.2e-07.
    assert estimated_cost(MYTHOMAX, 36, 0) == 2.88e-06
    assert estimated_cost(MYTHOMAX, 0, 9) == 7.2e-07
    assert estimated_cost(MYTHOMAX, 36, 9) == 3.6e-06


def test_prompt_and_completion_are_priced_separately() -> None:
    pricing = Pricing(input_usd_per_mtok=1.0, output_usd_per_mtok=3.0)
    assert estimated_cost(pricing, 1_000_000, 0) == 1.0
    assert estimated_cost(pricing, 0, 1_000_000) == 3.0
    assert estimated_cost(pricing, 15, 16) == pytest.approx(15e-6 + 48e-6, abs=1e-15)


def test_no_float_noise() -> None:
    assert repr(estimated_cost(MYTHOMAX, 15, 0)) == "1.2e-06"


def test_cached_prompt_tokens_are_billed_at_the_cache_read_price() -> None:
    pricing = Pricing(input_usd_per_mtok=1.0, output_usd_per_mtok=3.0, cache_read_usd_per_mtok=0.25)
    # 1,000 prompt tokens of which 768 cached, 10 completion tokens.
    assert estimated_cost(pricing, 1000, 10, 768) == pytest.approx(
        (232 * 1.0 + 768 * 0.25 + 10 * 3.0) / 1e6, abs=1e-15
    )
    # Without a cache-read price, cached tokens cost the input price: caching changes nothing.
    plain = Pricing(input_usd_per_mtok=1.0, output_usd_per_mtok=3.0)
    assert estimated_cost(plain, 1000, 10, 768) == estimated_cost(plain, 1000, 10)


def test_usage_always_carries_the_cached_count() -> None:
    pricing = Pricing(input_usd_per_mtok=1.0, output_usd_per_mtok=3.0, cache_read_usd_per_mtok=0.5)
    assert Usage.of(pricing, 300, 4).prompt_tokens_details == PromptTokensDetails(0)
    usage = Usage.of(pricing, 300, 4, 256)
    assert usage.cached_tokens == 256
    assert usage.estimated_cost == estimated_cost(pricing, 300, 4, 256)
    assert orjson.dumps(usage) == (
        b'{"prompt_tokens":300,"completion_tokens":4,"total_tokens":304,'
        b'"prompt_tokens_details":{"cached_tokens":256},"estimated_cost":0.000184}'
    )
