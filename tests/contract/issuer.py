"""The issuer hook the ``random`` kind's contract runs with: an in-memory key issuer that
accepts the keys it was told about (``apply``) until they are retired or undone."""

from __future__ import annotations

from typing import ClassVar

from rotation.errors import TargetRejected


class Issuer:
    """Hook methods of ``random``'s ``target.issuer`` (state shared by every instance)."""

    valid: ClassVar[dict[str, set[str]]] = {}
    applied: ClassVar[dict[str, str]] = {}

    @classmethod
    def seed(cls, secret: str, value: str) -> None:
        cls.valid[secret] = {value}
        cls.applied.pop(secret, None)

    @classmethod
    def accepts(cls, secret: str, value: object) -> bool:
        return isinstance(value, str) and value in cls.valid.get(secret, set())

    def apply(self, secret: str, value: str) -> None:
        self.valid.setdefault(secret, set()).add(value)
        self.applied[secret] = value

    def test(self, secret: str, value: str) -> None:
        if not self.accepts(secret, value):
            raise TargetRejected("the issuer does not know this key", sqlstate="28000")

    def retire(self, secret: str, old_value: str) -> None:
        self.valid.get(secret, set()).discard(old_value)
        self.applied.pop(secret, None)

    def undo(self, secret: str) -> None:
        key = self.applied.pop(secret, None)
        if key is not None:
            self.valid.get(secret, set()).discard(key)
