"""Credential kinds: one module (or folder) per kind behind the ``Rotator`` protocol in ``base``,
registered in ``registry`` with its target schema."""
