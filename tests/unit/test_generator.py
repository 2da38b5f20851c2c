"""Generated values honour length, classes, prefix and exclusions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rotation.generator import CHARACTER_CLASSES, GeneratorPolicy, generate


def test_default() -> None:
    values = {generate() for _ in range(200)}
    assert len(values) == 200
    for v in values:
        assert len(v) == 32
        assert any(c.islower() for c in v) and any(c.isupper() for c in v)
        assert any(c.isdigit() for c in v)


def test_policy() -> None:
    policy = GeneratorPolicy(
        length=40, classes={"lower": 2, "digits": 5, "symbols": 3}, prefix="sk-", exclude="0Ol1"
    )
    for _ in range(200):
        v = generate(policy)
        assert v.startswith("sk-") and len(v) == 43
        body = v[3:]
        assert sum(c.isdigit() for c in body) >= 5
        assert sum(c in CHARACTER_CLASSES["symbols"] for c in body) >= 3
        assert not set(body) & set("0Ol1")
        assert not any(c.isupper() for c in body)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length": 4},
        {"classes": {"emoji": 1}},
        {"classes": {}},
        {"length": 8, "classes": {"digits": 9}},
        {"classes": {"digits": 1}, "exclude": "0123456789"},
        {"prefix": "bad prefix"},
        {"colour": "red"},
    ],
)
def test_bad_policies(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        GeneratorPolicy(**kwargs)
