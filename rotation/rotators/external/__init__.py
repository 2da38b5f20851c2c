"""Any system, through an adapter the user runs: ``target`` (the policy block), ``transport``
(a signed HTTPS call or a command, both with a time budget) and ``rotator`` (the steps)."""
