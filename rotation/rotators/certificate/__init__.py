"""The ``certificate`` kind: TLS keys and certificates from an internal CA or OpenBao's PKI
(``rotator``; the value and its checks in ``bundle``, the issuers in ``issuers``)."""
