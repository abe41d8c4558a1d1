"""Request ids: DeepInfra's shape, drawn uniformly (the record's fast draw, `bytes.translate`
over one random block, must be as fair as a character at a time); and a record is never made
up where none is bound."""

from __future__ import annotations

import re

import pytest

from deepinfra_serve.observability.record import (
    RequestRecord,
    bind,
    current,
    new_request_id,
    unbind,
)


def test_request_ids_are_24_letters_and_digits_all_used_alike() -> None:
    ids = [new_request_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch("[A-Za-z0-9]{24}", i) for i in ids)
    counts = {c: 0 for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}
    for i in ids:
        for c in i:
            counts[c] += 1
    expected = 4000 * 24 / 62  # 1548; a fair draw stays within a few percent of it
    assert all(abs(n - expected) < 0.15 * expected for n in counts.values()), counts


def test_no_record_is_made_up_where_no_request_is_bound() -> None:
    with pytest.raises(LookupError, match="no request is bound"):
        current()
    record = RequestRecord("rid", "m")
    token = bind(record)
    try:
        assert current() is record
    finally:
        unbind(token)
    # Its model is resolved by the dispatcher before any service reads it.
    with pytest.raises(LookupError, match="rid: its model was never resolved"):
        _ = record.serves
