"""The mass-rotation progress: each state's bucket, the counts line and its ETA."""

from __future__ import annotations

from datetime import timedelta

from rotation.cli.progress import MassProgress, RunStatus, bucket
from rotation.run.states import RunState


def _runs(*states: str) -> list[RunStatus]:
    return [RunStatus(i, f"s{i}", state, None, None) for i, state in enumerate(states)]


def test_every_state_has_its_bucket() -> None:
    assert bucket("pending") == "pending"
    for state in ("created", "applied", "tested", "promoted", "restarted", "retired"):
        assert bucket(state) == "running"
    assert bucket("rolling_back") == "running"
    for final in ("succeeded", "needs_attention", "failed"):
        assert bucket(final) == final
    assert {bucket(state.value) for state in RunState} == {
        "pending",
        "running",
        "succeeded",
        "needs_attention",
        "failed",
    }


def test_counts_and_eta_from_the_rate_seen_while_watching() -> None:
    now = [100.0]
    mass = MassProgress(total=10, started=100.0, clock=lambda: now[0])
    mass.update(_runs("succeeded", "pending", "pending", "created", *["pending"] * 6))
    assert mass.eta() is None  # nothing ended while we watched: no rate yet
    now[0] = 110.0
    later = ["succeeded"] * 3 + ["needs_attention", "failed", "promoted"] + ["pending"] * 4
    mass.update(_runs(*later))
    # 4 runs ended in 10 s (the one ended before we looked does not count); 5 are left
    assert mass.eta() == timedelta(seconds=12)  # 10 / 4 * 5 = 12.5, rounded to even
    line = mass.summary(markup=False)
    assert line == ("pending 4, running 1, succeeded 3, needs_attention 1, failed 1, ETA 12s")
    mass.update(_runs(*["succeeded"] * 10))
    assert mass.eta() == timedelta(0) and mass.ended == 10
