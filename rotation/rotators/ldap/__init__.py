"""The ``ldap`` kind: directory passwords of service accounts, set with the password modify
extended operation (RFC 3062) through ``ldap3`` (``rotator``; the target block in ``target``,
connections and errors in ``directory``)."""
