"""The rotation run: ``states``, ``step`` (what a step gets and returns), ``steps`` (their
bodies), ``restart`` (the consumer-moving step and its strategies' runners), ``engine`` (the one
writer of run transitions), ``retry``, ``notify`` and ``runtime`` (per-process resources)."""
