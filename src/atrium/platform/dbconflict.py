"""What a database error caused by a concurrent request means, engine by engine.

Two requests writing the same rows at once can make the database refuse one of them. That is
no bug of either request, so the client must hear the truth, never a 500:

* ``deadlock`` — the database broke a lock cycle (PostgreSQL/MySQL deadlock, serialization
  failure) by rolling one transaction back: nothing of it was stored, retrying succeeds (409);
* ``busy`` — a lock wait gave up (SQLite's busy timeout, PostgreSQL's ``lock_timeout``):
  nothing was stored, retry shortly (503).

The ORM's ``StaleDataError`` (a loaded row vanished before the UPDATE/DELETE the unit of work
sent) needs no engine knowledge: :mod:`atrium.platform.errors` answers it with 404.

This module is the one place that knows each engine's codes.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.exc import DBAPIError

Contention = Literal["deadlock", "busy"]

# SQLSTATEs (PostgreSQL; MySQL and MariaDB report the same class 40 codes).
_BY_SQLSTATE: dict[str, Contention] = {
    "40P01": "deadlock",  # deadlock_detected
    "40001": "deadlock",  # serialization_failure (MySQL/MariaDB: ER_LOCK_DEADLOCK)
    "55P03": "busy",  # lock_not_available (lock_timeout, NOWAIT)
}
# MySQL/MariaDB error numbers (their drivers report no SQLSTATE attribute).
_BY_MYSQL_ERRNO: dict[int, Contention] = {
    1213: "deadlock",  # ER_LOCK_DEADLOCK
    1205: "busy",  # ER_LOCK_WAIT_TIMEOUT (innodb_lock_wait_timeout)
    3572: "busy",  # ER_LOCK_NOWAIT
}
# SQLite primary result codes (extended codes carry them in the low byte).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def contention(exc: DBAPIError) -> Contention | None:
    """``deadlock`` or ``busy`` when ``exc`` is the database refusing a concurrent write."""
    original = exc.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate in _BY_SQLSTATE:
        return _BY_SQLSTATE[sqlstate]
    if original is not None and type(original).__module__.startswith(("asyncmy", "pymysql")):
        errno = original.args[0] if original.args else None
        if isinstance(errno, int) and errno in _BY_MYSQL_ERRNO:
            return _BY_MYSQL_ERRNO[errno]
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return "busy"
    return None
