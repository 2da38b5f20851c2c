"""``acknowledge``: publish the move, then wait for every live consumer to acknowledge it.

The move is a promotion, or a rollback (the previous version is current again); consumers
acknowledge each apart (rotation/rollout.py). A bus that restarted moments ago may have lost
every heartbeat: the runner does not conclude "everyone acknowledged" until it has been up
for ``BUS_SETTLE`` (consumers re-announce themselves as soon as they reconnect).
"""

from __future__ import annotations

from datetime import timedelta

from rotation.errors import ConsumersFailed
from rotation.policy.restart import AcknowledgeRestart, RestartStrategy
from rotation.rollout import Announcement
from rotation.run.restart import Progress, WaveOutcome, wave_started
from rotation.run.step import StepInput

__all__ = ["ACK_POLL", "BUS_SETTLE", "acknowledge"]

#: How soon an acknowledge wait asks again (the dispatcher tick bounds it from below).
ACK_POLL = timedelta(seconds=1)
#: How long the bus must have been up before an empty or complete set of consumers is
#: believed (a consumer reconnects within 5 s, then heart-beats at once).
BUS_SETTLE = timedelta(seconds=10)


def acknowledge(step: StepInput, spec: RestartStrategy, progress: Progress) -> WaveOutcome:
    """Publish (again, at each check: a consumer that missed one hears the next); done once
    every live consumer acknowledged, failed when one could not move."""
    assert isinstance(spec, AcknowledgeRestart)
    started = wave_started(step, progress)
    move = step.announced()
    announcement = Announcement(step.secret, move.version, step.run_id, move.rollback_of)
    what = f"{'the rollback to ' if move.rollback_of else ''}version {move.version}"
    bus = step.services.bus()
    step.guard.check()
    bus.publish(announcement)
    live = bus.live_consumers(step.secret)
    acks = bus.acks(announcement)
    failed = {c: o for c, o in acks.items() if o != "ok"}
    if failed:
        who = ", ".join(f"{c} ({o})" for c, o in sorted(failed.items()))
        raise ConsumersFailed(f"consumers could not move to {what}: {who}")
    missing = [c for c in live if c not in acks]
    if not missing:
        uptime = bus.uptime()
        settle = BUS_SETTLE.total_seconds()
        if uptime is not None and uptime < settle:
            return WaveOutcome(
                wait_until=step.now + ACK_POLL,
                note=f"the rollout bus restarted {uptime:.0f} s ago; waiting {settle:.0f} s for "
                "consumers to announce themselves again",
            )
        bus.forget_acks(announcement)
        return WaveOutcome(note=f"{len(live)} consumer(s) acknowledged {what}")
    if step.now >= started + spec.timeout:
        if spec.on_timeout == "proceed":
            bus.forget_acks(announcement)
            return WaveOutcome(note=f"proceeding without acknowledgement from {', '.join(missing)}")
        raise ConsumersFailed(
            f"timed out after {spec.timeout} waiting for {', '.join(missing)} to acknowledge {what}"
        )
    return WaveOutcome(
        wait_until=step.now + ACK_POLL,
        note=f"waiting for {len(missing)} of {len(live)} consumer(s) to acknowledge {what}",
    )
