"""When runs start: ``dispatcher`` (the beat tick: sync policies, start due runs, recover
stalled ones) and ``triggers`` (manual starts: rotate one secret now, or every match)."""
