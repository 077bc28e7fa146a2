"""The identity service (Keystone), split by job.

* ``actor.py`` — ``IdentityActor``: the store's schema, first-start bootstrap, the purge loop;
  it serves the three servants below, which share one ``state.IdentityState``.
* ``tokens.py`` — logins and lockout, re-scoping, validation, revocation, key rotation.
* ``admin.py`` — projects, users, groups, roles, role assignments.
* ``appcreds.py`` — application credentials.
* ``keys.py`` — the Fernet key repository and the token payload.
* ``passwords.py`` — argon2id hashing of passwords and secrets (earlier scrypt hashes upgraded at login).

Its API: ``api/identity.py``.
"""
