"""MySQL and MariaDB accounts, by concern: ``rotator`` (the steps), ``target`` (the policy's
``target`` block) and ``grants`` (mirroring privileges onto the alternate account)."""
