"""Who may do what, and the record of what was done: ``roles`` (principals, roles, bindings),
``audit`` (the hash-chained trail and its sinks) and ``guard`` (check a permission, audit a
denial: the one way every entry point authorizes)."""
