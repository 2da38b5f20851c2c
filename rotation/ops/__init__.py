"""What operators ask of the ledger: ``operations`` (status, run queries, rollback),
``forecast`` (what rotates when) and ``metrics`` (the Prometheus collector)."""
