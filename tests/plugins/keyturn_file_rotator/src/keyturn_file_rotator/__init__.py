"""A third-party rotator kind, ``file-token``: the target is a JSON file listing the tokens a
service accepts (``{"tokens": [...]}``). It is what a plug-in distribution looks like: one
class with ``Target`` and ``capabilities``, and an entry point in ``keyturn.rotators``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rotation.errors import TargetRejected
from rotation.generator import generate
from rotation.rotators.base import Capabilities, RotationContext, run_versions, target_of
from rotation.schema import Spec
from rotation.values import SecretValue


class FileTokenTarget(Spec):
    """``file-token``: the JSON file the service reads its accepted tokens from."""

    path: str


def _tokens(path: Path) -> list[str]:
    return list(json.loads(path.read_text())["tokens"]) if path.exists() else []


def _write(path: Path, tokens: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tokens": tokens}))
    os.replace(tmp, path)


class FileTokenRotator:
    kind = "file-token"
    Target = FileTokenTarget
    capabilities = Capabilities(dual_valid=True, revokes=True)

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        staged = ctx.staged()
        return staged.value if staged is not None else generate(ctx.generator)

    def apply(self, ctx: RotationContext) -> None:
        path = Path(target_of(ctx, FileTokenTarget).path)
        new, _ = run_versions(ctx)
        tokens = _tokens(path)
        if new.value not in tokens:
            _write(path, [*tokens, str(new.value)])

    def test(self, ctx: RotationContext) -> None:
        new, _ = run_versions(ctx)
        if new.value not in _tokens(Path(target_of(ctx, FileTokenTarget).path)):
            raise TargetRejected("the service does not accept the new token")

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        path = Path(target_of(ctx, FileTokenTarget).path)
        _write(path, [t for t in _tokens(path) if t != old])

    def undo(self, ctx: RotationContext) -> None:
        path = Path(target_of(ctx, FileTokenTarget).path)
        current = ctx.current().value
        _write(path, [t for t in _tokens(path) if t == current])
