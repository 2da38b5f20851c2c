"""What applications use: ``manager`` (``SecretsManager``), ``cache``, ``consumer`` (the agent
that follows rotations), ``events`` (what a rotation callback receives) and ``migrate_env``."""
