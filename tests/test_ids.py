"""Ids: a prefix and 26 base32 characters of 128 random bits, written as base64.b32encode
writes them (the database's new_id() writes the same), so an id names its bits once."""

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.kit import ids


@given(st.binary(min_size=16, max_size=16))
def test_an_id_is_the_base32_of_its_random_bits(random: bytes) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ids.secrets, "token_bytes", lambda n: random[:n])
        made = ids.new_id("ord")
    assert re.match(ids.ID_PATTERN, made)
    assert made == "ord_" + base64.b32encode(random).decode().rstrip("=").lower()


def test_ids_do_not_repeat() -> None:
    assert len({ids.new_id("evt") for _ in range(10_000)}) == 10_000
