"""Names and values: what every backend can be handed."""

from __future__ import annotations

import pickle

import pytest

from rotation.errors import InvalidSecretName, InvalidSecretValue
from rotation.names import validate_name, validate_prefix
from rotation.values import FrozenDict, decode_value, encode_value, freeze_value


@pytest.mark.parametrize(
    "good", ["db_password", "api_keys/ncbi", "phagen/db.main-2", "_x", "A1/b_2/c-3.d"]
)
def test_good_names(good: str) -> None:
    assert validate_name(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "../x",
        "a/..",
        "/a",
        "a/",
        "a//b",
        "a\n",
        "a\x1b[31m",
        "a b",
        "é",
        "a;b",
        "a'b",
        'a"b',
        "a%2fb",
        "a?b",
        "a#b",
        "a*b",
        ".env",
        "x" * 201,
        None,
        3,
    ],
)
def test_bad_names(bad: object) -> None:
    with pytest.raises(InvalidSecretName) as info:
        validate_name(bad)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_prefix() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("api/") == "api/"
    with pytest.raises(InvalidSecretName):
        validate_prefix("../")


def test_values_round_trip_and_freeze() -> None:
    value = freeze_value({"a": [1, {"b": 2}], "s": "x"})
    assert isinstance(value, FrozenDict)
    text = encode_value(value)
    assert decode_value(text, True) == {"a": (1, {"b": 2}), "s": "x"}
    assert decode_value("plain", False) == "plain"
    assert pickle.loads(pickle.dumps(value)) == {"a": (1, {"b": 2}), "s": "x"}
    with pytest.raises(InvalidSecretValue):
        freeze_value(b"bytes")
    with pytest.raises(InvalidSecretValue):
        freeze_value(["list"])
