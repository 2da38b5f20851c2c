"""``acknowledge``: publish the promotion, then wait for every live consumer to acknowledge."""

from __future__ import annotations

from datetime import timedelta

from rotation.errors import ConsumersFailed, RotationError
from rotation.policy.restart import AcknowledgeRestart, RestartStrategy
from rotation.rollout import Announcement
from rotation.run.restart import Progress, WaveOutcome, wave_started
from rotation.run.step import StepInput

__all__ = ["ACK_POLL", "acknowledge"]

#: How soon an acknowledge wait asks again (the dispatcher tick bounds it from below).
ACK_POLL = timedelta(seconds=1)


def acknowledge(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """Publish (again, at each check: a consumer that missed one hears the next); done once
    every live consumer acknowledged, failed when one could not move."""
    assert isinstance(spec, AcknowledgeRestart)
    started = wave_started(step, progress)
    version = step.to_version
    if version is None:
        raise RotationError("no promoted version recorded for this run", retryable=False)
    bus = step.services.bus()
    step.guard.check()
    bus.publish(Announcement(step.secret, version, step.run_id))
    live = bus.live_consumers(step.secret)
    acks = bus.acks(step.secret, version)
    failed = {c: o for c, o in acks.items() if o != "ok"}
    if failed:
        who = ", ".join(f"{c} ({o})" for c, o in sorted(failed.items()))
        raise ConsumersFailed(f"consumers could not move to version {version}: {who}")
    missing = [c for c in live if c not in acks]
    if not missing:
        bus.forget_acks(step.secret, version)
        return WaveOutcome(note=f"{len(live)} consumer(s) acknowledged version {version}")
    if step.now >= started + spec.timeout:
        if spec.on_timeout == "proceed":
            bus.forget_acks(step.secret, version)
            return WaveOutcome(note=f"proceeding without acknowledgement from {', '.join(missing)}")
        raise ConsumersFailed(
            f"timed out after {spec.timeout} waiting for {', '.join(missing)} to acknowledge "
            f"version {version}"
        )
    return WaveOutcome(
        wait_until=step.now + ACK_POLL,
        note=f"waiting for {len(missing)} of {len(live)} consumer(s) to acknowledge",
    )
