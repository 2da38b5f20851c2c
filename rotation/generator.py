"""Generating new secret values from a policy: length, character classes, prefix, exclusions."""

from __future__ import annotations

import secrets
import string

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CHARACTER_CLASSES", "GeneratorPolicy", "generate"]

CHARACTER_CLASSES: dict[str, str] = {
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digits": string.digits,
    "symbols": "!#$%&()*+,-.:;<=>?@[]^_{|}~",
}

_random = secrets.SystemRandom()


class GeneratorPolicy(BaseModel):
    """How to generate a value: ``length`` random characters after ``prefix``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length: int = Field(default=32, ge=8, le=4096, description="random characters, prefix excluded")
    #: Minimum count per character class; a class absent here is not used at all.
    classes: dict[str, int] = Field(default_factory=lambda: {"lower": 1, "upper": 1, "digits": 1})
    prefix: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_\-.]*$")
    exclude: str = Field(default="", description="characters never used, e.g. look-alikes 'O0l1'")

    @model_validator(mode="after")
    def _check(self) -> GeneratorPolicy:
        unknown = set(self.classes) - set(CHARACTER_CLASSES)
        if unknown:
            raise ValueError(
                f"unknown character class {sorted(unknown)[0]!r}; "
                f"use {', '.join(CHARACTER_CLASSES)}"
            )
        if not self.classes:
            raise ValueError("at least one character class is needed")
        for cls, minimum in self.classes.items():
            if minimum < 0:
                raise ValueError(f"minimum count for {cls!r} must be >= 0")
            if not self._alphabet(cls):
                raise ValueError(f"'exclude' removes every character of class {cls!r}")
        if sum(self.classes.values()) > self.length:
            raise ValueError(
                f"minimum counts add up to {sum(self.classes.values())}, "
                f"more than length {self.length}"
            )
        return self

    def _alphabet(self, cls: str) -> str:
        return "".join(c for c in CHARACTER_CLASSES[cls] if c not in self.exclude)


def generate(policy: GeneratorPolicy | None = None) -> str:
    """A fresh value meeting every minimum of ``policy``, from the OS's CSPRNG."""
    policy = policy or GeneratorPolicy()
    alphabets = {cls: policy._alphabet(cls) for cls in policy.classes}
    chars = [secrets.choice(alphabets[cls]) for cls, n in policy.classes.items() for _ in range(n)]
    pool = "".join(alphabets.values())
    chars += [secrets.choice(pool) for _ in range(policy.length - len(chars))]
    _random.shuffle(chars)
    return policy.prefix + "".join(chars)
