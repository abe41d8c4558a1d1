"""The benchmark's card: the tests' card without the engine arguments only the tests want."""

from __future__ import annotations

from pathlib import Path

from benchmarks.servers import bench_card
from deepinfra_serve.config.cards import load_card

from ..helpers import CARDS

TINY = CARDS / "dev" / "tiny-random.yaml"


def test_the_request_logs_the_tests_read_are_off_and_nothing_else_changes(tmp_path: Path) -> None:
    derived = bench_card(TINY, tmp_path)
    assert derived.parent == tmp_path
    tests_card, bench = load_card(TINY), load_card(derived)
    assert tests_card.engine.extra_args == {"enable_log_requests": True}
    assert bench.engine.extra_args == {}
    without_logs = tests_card.engine.model_copy(update={"extra_args": {}})
    assert bench == tests_card.model_copy(update={"engine": without_logs})
    assert bench.chat_template == tests_card.chat_template  # a block scalar, written back whole


def test_a_production_card_is_measured_as_it_is(tmp_path: Path) -> None:
    card = CARDS / "mythomax-l2-13b-turbo.yaml"
    assert bench_card(card, tmp_path) == card
    assert not list(tmp_path.iterdir())
