"""The ``aws-iam`` rotator: an IAM user's access keys, using the two keys IAM allows per user.

Secret value: ``{"access_key_id", "secret_access_key", "user_name"}`` (``user_name`` is learnt
from STS when missing; other fields are carried over). The pending key is the user's second
key, created switched off; ``apply`` switches it on, ``test`` signs STS ``GetCallerIdentity``
with it, ``retire`` switches the old key off, and the next rotation deletes it (it needs the
slot): until then a deactivated key can be switched on again by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from rotation.errors import RotationError, TargetRejected
from rotation.rotators.aws_iam.iam import AccessKey, Iam, KeyInfo
from rotation.rotators.aws_iam.target import AwsIamTarget
from rotation.rotators.base import Capabilities, RotationContext, run_versions, target_of
from rotation.values import SecretValue, SecretVersion

__all__ = ["AwsIamRotator"]

log = logging.getLogger("keyturn.rotators.aws_iam")

#: Pause between two tries of a new key that AWS does not accept yet.
READY_PAUSE = 1.0


class AwsIamRotator:
    """IAM access keys: both keys work between promote and retire; retire switches the old off."""

    kind = "aws-iam"
    Target = AwsIamTarget
    capabilities = Capabilities(dual_valid=True, revokes=True)

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        """Make the user's second key (switched off), after deleting a deactivated one."""
        staged = ctx.staged()
        if staged is not None:
            return staged.value
        target = target_of(ctx, AwsIamTarget)
        key = AccessKey.from_value(current, f"The current value of {ctx.secret!r}")
        user = self._user(ctx, target, current, key)
        iam = self._iam(ctx, target, self._admin_or(ctx, target, key))
        ctx.check_lease()
        keys = iam.keys(user)
        ids = [k.access_key_id for k in keys]
        if key.access_key_id not in ids:
            raise TargetRejected(
                f"The current access key of {ctx.secret!r} ({key.access_key_id}) is not a key of "
                f"IAM user {user!r} (its keys: {', '.join(ids) or 'none'}): fix the secret or "
                "target.user_name."
                if len(keys) < 2
                else f"IAM user {user!r} already holds two access keys ({', '.join(ids)}) and "
                f"neither is the current one of {ctx.secret!r} ({key.access_key_id}): delete "
                "the one nothing uses, or fix the secret."
            )
        for other in keys:
            if other.access_key_id != key.access_key_id:
                self._make_room(ctx, iam, user, other)
        ctx.check_lease()
        new = iam.create(user)
        log.info(
            "access key created (inactive until apply)",
            extra={"action": "aws_iam.key_created", "secret": ctx.secret, "key": new.access_key_id},
        )
        assert isinstance(current, Mapping)  # AccessKey.from_value checked it
        value = dict(current)
        value.update(
            access_key_id=new.access_key_id,
            secret_access_key=new.secret_access_key,
            user_name=user,
        )
        value.pop("session_token", None)
        return value

    def _new_key(
        self, ctx: RotationContext, target: AwsIamTarget
    ) -> tuple[Iam, str, AccessKey, KeyInfo | None]:
        """The run's new key as IAM lists it, asked with the managing key: (client, user, key,
        the listing's entry or None when it is gone)."""
        new_version, old_version = run_versions(ctx)
        new = AccessKey.from_value(new_version.value, f"The new value of {ctx.secret!r}")
        user = _user_of(new_version, ctx.secret)
        iam = self._iam(ctx, target, self._manager_key(ctx, old_version, new_version))
        ctx.check_lease()
        return iam, user, new, self._find(iam, user, new.access_key_id)

    def apply(self, ctx: RotationContext) -> None:
        """Switch the new key on (once on, switching it on again changes nothing)."""
        target = target_of(ctx, AwsIamTarget)
        iam, user, new, found = self._new_key(ctx, target)
        if found is None:
            raise TargetRejected(
                f"The new access key {new.access_key_id} of {ctx.secret!r} is gone from IAM "
                f"user {user!r}."
            )
        if not found.active:
            ctx.check_lease()
            iam.set_active(user, new.access_key_id, active=True)

    def test(self, ctx: RotationContext) -> None:
        """Sign STS ``GetCallerIdentity`` with the new key, retrying while IAM catches up."""
        target = target_of(ctx, AwsIamTarget)
        _, user, new, found = self._new_key(ctx, target)
        if found is None or not found.active:
            state = "gone" if found is None else "switched off"
            raise TargetRejected(
                f"The new access key {new.access_key_id} of {ctx.secret!r} is {state} at IAM "
                f"user {user!r}."
            )
        probe = self._iam(ctx, target, new)
        deadline = time.monotonic() + ctx.time_left(target.ready_timeout.total_seconds())
        while True:
            ctx.check_lease()
            accepted, caller = probe.accepted()
            if accepted:
                if caller != user:
                    raise TargetRejected(
                        f"The new access key {new.access_key_id} of {ctx.secret!r} belongs to "
                        f"IAM user {caller!r}, not {user!r}."
                    )
                return
            if time.monotonic() + READY_PAUSE >= deadline:
                raise TargetRejected(
                    f"AWS does not accept the new access key {new.access_key_id} of "
                    f"{ctx.secret!r} yet (after {target.ready_timeout.total_seconds():g} s).",
                    retryable=True,
                    sqlstate="InvalidClientTokenId",
                )
            time.sleep(READY_PAUSE)

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        """Switch the old key off (deleted by the next rotation, which needs the slot)."""
        target = target_of(ctx, AwsIamTarget)
        retired = AccessKey.from_value(old, f"The previous value of {ctx.secret!r}")
        current_version = ctx.current()
        current = AccessKey.from_value(
            current_version.value, f"The current value of {ctx.secret!r}"
        )
        if retired.access_key_id == current.access_key_id:
            raise RotationError(
                f"Refusing to retire the access key {ctx.secret!r} currently uses.",
                retryable=False,
            )
        user = _user_of(current_version, ctx.secret)
        iam = self._iam(ctx, target, self._admin_or(ctx, target, current))
        ctx.check_lease()
        found = self._find(iam, user, retired.access_key_id)
        if found is not None and found.active:
            ctx.check_lease()
            iam.set_active(user, retired.access_key_id, active=False)
            log.info(
                "old access key switched off",
                extra={
                    "action": "aws_iam.key_deactivated",
                    "secret": ctx.secret,
                    "key": retired.access_key_id,
                },
            )

    def undo(self, ctx: RotationContext) -> None:
        """Before promotion, delete this run's key (nobody holds it); after a rollback, switch
        it off (a consumer may have picked it up: it can be switched on again by hand)."""
        target = target_of(ctx, AwsIamTarget)
        current_version = ctx.current()
        if current_version.token == ctx.token:
            raise RotationError(
                f"Undo of {ctx.secret!r} while this run's value is current: roll back first.",
                retryable=False,
            )
        mine = ctx.staged()
        rolled_back = False
        if mine is None:
            previous = ctx.previous()
            if previous is not None and previous.token == ctx.token:
                mine, rolled_back = previous, True
        if mine is None:
            return  # nothing of this run is readable any more
        current = AccessKey.from_value(
            current_version.value, f"The current value of {ctx.secret!r}"
        )
        discarded = AccessKey.from_value(mine.value, f"This run's value of {ctx.secret!r}")
        if discarded.access_key_id == current.access_key_id:
            return
        user = _user_of(mine, ctx.secret)
        iam = self._iam(ctx, target, self._admin_or(ctx, target, current))
        ctx.check_lease()
        if rolled_back:
            found = self._find(iam, user, discarded.access_key_id)
            if found is not None and found.active:
                ctx.check_lease()
                iam.set_active(user, discarded.access_key_id, active=False)
        else:
            iam.delete(user, discarded.access_key_id)

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _iam(ctx: RotationContext, target: AwsIamTarget, key: AccessKey) -> Iam:
        timeout = ctx.time_left(target.timeout)
        return Iam(key, region=target.region, endpoint_url=target.endpoint_url, timeout=timeout)

    @staticmethod
    def _admin_or(ctx: RotationContext, target: AwsIamTarget, own: AccessKey) -> AccessKey:
        """The admin's key, or (without ``admin_secret``) the user's own working key."""
        if target.admin_secret is None:
            return own
        return AccessKey.from_value(
            ctx.secret_value(target.admin_secret), f"The admin secret {target.admin_secret!r}"
        )

    def _manager_key(
        self, ctx: RotationContext, old: SecretVersion, new: SecretVersion
    ) -> AccessKey:
        """The key that manages the user's keys during apply and test: the admin's, else the
        key that works now (the old one; once promoted, the new one works too)."""
        target = target_of(ctx, AwsIamTarget)
        own = old if ctx.current().token != ctx.token else new
        return self._admin_or(
            ctx, target, AccessKey.from_value(own.value, f"The current value of {ctx.secret!r}")
        )

    def _user(
        self, ctx: RotationContext, target: AwsIamTarget, value: SecretValue, key: AccessKey
    ) -> str:
        named = value.get("user_name") if isinstance(value, Mapping) else None
        if isinstance(named, str) and named:
            return named
        ctx.check_lease()
        return self._iam(ctx, target, key).caller_user()

    @staticmethod
    def _find(iam: Iam, user: str, key_id: str) -> KeyInfo | None:
        return next((k for k in iam.keys(user) if k.access_key_id == key_id), None)

    @staticmethod
    def _make_room(ctx: RotationContext, iam: Iam, user: str, other: KeyInfo) -> None:
        """The user's second key must go before a new one is made: only a switched-off key
        (the one the last rotation retired, or one an interrupted create left) is deleted."""
        if other.active:
            raise TargetRejected(
                f"IAM user {user!r} already holds a second, active access key "
                f"({other.access_key_id}) that is not the current one of {ctx.secret!r}: "
                "switch it off (or delete it) once nothing uses it; rotation needs its slot."
            )
        ctx.check_lease()
        iam.delete(user, other.access_key_id)
        log.info(
            "deactivated access key deleted",
            extra={
                "action": "aws_iam.key_deleted",
                "secret": ctx.secret,
                "key": other.access_key_id,
            },
        )


def _user_of(version: SecretVersion, secret: str) -> str:
    value = version.value
    named = value.get("user_name") if isinstance(value, Mapping) else None
    if not isinstance(named, str) or not named:
        raise RotationError(
            f"A value of {secret!r} lacks user_name (create records it).", retryable=False
        )
    return named
