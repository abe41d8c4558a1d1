from __future__ import annotations

import pytest

from deepinfra_serve.config.pricing import Pricing, estimated_cost

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
