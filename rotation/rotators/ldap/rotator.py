"""The ``ldap`` rotator: service accounts' directory passwords.

Secret value: ``{"url", "bind_dn", "password"}`` (``ldap://`` or ``ldaps://``; other fields are
carried over). A directory entry has one password, so **single** mode (the default) has a
window: from ``apply`` until consumers reload, the old password is refused. **Alternating**
mode uses two accounts that take turns, like the ``postgres`` kind: the inactive one gets the
new password, both work until ``retire`` gives the old one a password nobody knows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rotation.errors import RotationError, TargetRejected
from rotation.generator import GeneratorPolicy, generate
from rotation.rotators.base import Capabilities, RotationContext, run_versions, target_of
from rotation.rotators.ldap.directory import REFUSED, Account, Directory
from rotation.rotators.ldap.target import LdapTarget
from rotation.values import SecretValue, SecretVersion

__all__ = ["LdapRotator"]

#: The password nobody knows that a retired account gets.
_SCRAMBLE = GeneratorPolicy(length=48)


class LdapRotator:
    """Directory passwords: alternating accounts are zero-downtime, a single account is not."""

    kind = "ldap"
    Target = LdapTarget
    capabilities = Capabilities(dual_valid=False, revokes=True)

    @classmethod
    def capabilities_for(cls, target: LdapTarget) -> Capabilities:
        return Capabilities(dual_valid=target.mode == "alternating", revokes=True)

    def create(self, ctx: RotationContext, current: SecretValue) -> SecretValue:
        staged = ctx.staged()
        if staged is not None:
            return staged.value
        target = target_of(ctx, LdapTarget)
        account = self._account(current, f"The current value of {ctx.secret!r}")
        assert isinstance(current, Mapping)
        value = dict(current)
        value["password"] = generate(ctx.generator)
        if target.mode == "alternating":
            value["bind_dn"] = target.other(account.bind_dn)
        return value

    def apply(self, ctx: RotationContext) -> None:
        """Set the new password (already set: done). Single mode: with the admin, or as the
        account itself with its current (then previous) password."""
        target = target_of(ctx, LdapTarget)
        directory = _directory(ctx, target)
        new_version, old_version = run_versions(ctx)
        new = self._account(new_version.value, f"The new value of {ctx.secret!r}")

        def holders() -> list[Account]:
            old = self._account(old_version.value, f"The old value of {ctx.secret!r}")
            return [old, *self._previous(ctx, new)]

        self._make_password(ctx, target, directory, new, holders)

    def test(self, ctx: RotationContext) -> None:
        """Bind as the new value's DN with the new password, and ask who we are."""
        target = target_of(ctx, LdapTarget)
        new_version, _ = run_versions(ctx)
        new = self._account(new_version.value, f"The new value of {ctx.secret!r}")
        ctx.check_lease()
        if not _directory(ctx, target).accepts(new):
            raise TargetRejected(
                f"The directory refused the new password of {ctx.secret!r} at {new.where()}.",
                sqlstate=REFUSED,
            )

    def retire(self, ctx: RotationContext, old: SecretValue) -> None:
        """Alternating: the old account gets a password nobody knows (its entry stays, as the
        next rotation's inactive account). Single: nothing (apply replaced the password)."""
        target = target_of(ctx, LdapTarget)
        if target.mode != "alternating":
            return
        retired = self._account(old, f"The previous value of {ctx.secret!r}")
        current = self._account(ctx.current().value, f"The current value of {ctx.secret!r}")
        if _same_dn(retired.bind_dn, current.bind_dn):
            raise RotationError(
                f"Refusing to retire the account {ctx.secret!r} currently uses.", retryable=False
            )
        self._scramble(ctx, target, retired)

    def undo(self, ctx: RotationContext) -> None:
        """Make only the current value work again: single mode sets the current password back;
        alternating mode scrambles the inactive account's pending password (after a rollback
        nothing is done: the current account was never touched)."""
        target = target_of(ctx, LdapTarget)
        current_version = ctx.current()
        if current_version.token == ctx.token:
            raise RotationError(
                f"Undo of {ctx.secret!r} while this run's value is current: roll back first.",
                retryable=False,
            )
        current = self._account(current_version.value, f"The current value of {ctx.secret!r}")
        staged = ctx.staged()
        if target.mode == "alternating":
            if staged is not None:
                mine = self._account(staged.value, f"This run's value of {ctx.secret!r}")
                if not _same_dn(mine.bind_dn, current.bind_dn):
                    self._scramble(ctx, target, mine)
            return
        directory = _directory(ctx, target)

        def holders() -> list[Account]:
            tried = [v for v in (staged, self._rolled_back(ctx)) if v is not None]
            return [self._account(v.value, f"A value of {ctx.secret!r}") for v in tried]

        self._make_password(ctx, target, directory, current, holders)

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _account(value: SecretValue, what: str) -> Account:
        return Account.from_value(value, what)

    def _admin(self, ctx: RotationContext, target: LdapTarget, user: Account) -> Account:
        assert target.admin_secret is not None
        admin = Account.from_value(
            ctx.secret_value(target.admin_secret),
            f"The admin secret {target.admin_secret!r}",
            default_url=user.url,
        )
        if _same_dn(admin.bind_dn, user.bind_dn):
            raise RotationError(
                "The admin_secret's bind DN must not be a rotated account.", retryable=False
            )
        return admin

    @staticmethod
    def _previous(ctx: RotationContext, new: Account) -> list[Account]:
        previous = ctx.previous()
        if previous is None:
            return []
        try:
            return [Account.from_value(previous.value, "previous")]
        except RotationError:
            return []

    @staticmethod
    def _rolled_back(ctx: RotationContext) -> SecretVersion | None:
        previous = ctx.previous()
        return previous if previous is not None and previous.token == ctx.token else None

    def _make_password(
        self,
        ctx: RotationContext,
        target: LdapTarget,
        directory: Directory,
        goal: Account,
        holders: Callable[[], list[Account]],
    ) -> None:
        """Make ``goal``'s password the one the directory checks (already: done): with the admin
        when there is one, else as the account itself with a password ``holders`` may hold."""
        ctx.check_lease()
        if directory.accepts(goal):
            return
        if target.admin_secret is not None:
            admin = self._admin(ctx, target, goal)
            ctx.check_lease()
            directory.set_password(admin, goal.bind_dn, goal.password)
            return
        self._set_own(ctx, directory, goal, holders())

    @staticmethod
    def _set_own(
        ctx: RotationContext, directory: Directory, goal: Account, holders: list[Account]
    ) -> None:
        """As the account itself, with the first of ``holders``' passwords it accepts, change
        its password to ``goal``'s."""
        for holder in holders:
            if not _same_dn(holder.bind_dn, goal.bind_dn) or holder.password == goal.password:
                continue
            ctx.check_lease()
            if directory.accepts(holder):
                ctx.check_lease()
                directory.set_password(holder, goal.bind_dn, goal.password, old=holder.password)
                return
        raise RotationError(
            f"No known password of {goal.bind_dn!r} is accepted any more, so its password "
            f"cannot be set for {ctx.secret!r}: give the policy target.admin_secret, or set it "
            "by hand.",
            retryable=False,
        )

    def _scramble(self, ctx: RotationContext, target: LdapTarget, account: Account) -> None:
        """Give ``account`` a password nobody knows, if its known one still binds."""
        directory = _directory(ctx, target)
        ctx.check_lease()
        if not directory.accepts(account):
            return
        admin = self._admin(ctx, target, account)
        ctx.check_lease()
        directory.set_password(admin, account.bind_dn, generate(_SCRAMBLE))


def _directory(ctx: RotationContext, target: LdapTarget) -> Directory:
    return Directory(
        start_tls=target.start_tls,
        ca_file=target.ca_file,
        allow_plaintext=target.allow_plaintext,
        timeout=ctx.time_left(target.connect_timeout),
    )


def _same_dn(a: str, b: str) -> bool:
    return ",".join(p.strip().lower() for p in a.split(",")) == ",".join(
        p.strip().lower() for p in b.split(",")
    )
