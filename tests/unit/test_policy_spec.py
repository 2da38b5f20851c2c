"""What the ledger stores of a policy validates back into the same policy."""

from __future__ import annotations

from pathlib import Path

from rotation.policy import Policy, load_policies

REPO = Path(__file__).resolve().parents[2]


def test_shipped_policies_round_trip_through_the_ledger_spec() -> None:
    loaded = load_policies(REPO / "schedules")
    assert not loaded.errors and loaded.policies
    for policy in loaded.policies:
        again = Policy.model_validate(policy.to_spec())
        assert again.spec_hash == policy.spec_hash
        assert again.to_spec() == policy.to_spec()


def test_demo_policies_are_valid() -> None:
    loaded = load_policies(REPO / "schedules" / "demo")
    assert not loaded.errors
    assert {p.name for p in loaded.policies} == {"demo-api-keys", "demo-token"}
