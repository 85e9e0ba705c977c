"""Per-engine bulk loaders for the HR tables, chosen once per engine.

Each engine stores, checks and backs up HR rows its own fastest way (COPY and set-based SQL
on PostgreSQL, ``LOAD DATA`` on MariaDB/MySQL, executemany on SQLite); the services call
:func:`loader_for` and then the same :class:`~atrium.hr.bulk.base.Loader` methods whatever
the engine. The loader is picked from the engine's dialect the first time an engine is used
and kept with that engine (it remembers what it learned about the engine, e.g. whether its
role may skip foreign-key triggers). A new engine is one new module and one line below.
"""

from __future__ import annotations

import importlib
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from atrium.hr.bulk.base import Loader

# Dialect name -> "module:class" of its loader.
LOADERS = {
    "postgresql": "atrium.hr.bulk.postgres:PostgresLoader",
    "mysql": "atrium.hr.bulk.mysql:MySQLLoader",
    "mariadb": "atrium.hr.bulk.mysql:MySQLLoader",
    "sqlite": "atrium.hr.bulk.sqlite:SQLiteLoader",
}

_chosen: WeakKeyDictionary[Engine, Loader] = WeakKeyDictionary()


def loader_for(bind: AsyncSession | AsyncConnection | AsyncEngine) -> Loader:
    """The loader of the engine behind ``bind`` (made on first use, then kept)."""
    if isinstance(bind, AsyncSession):
        engine: Engine = bind.get_bind().engine
    else:
        engine = bind.sync_engine
    loader = _chosen.get(engine)
    if loader is None:
        name = engine.dialect.name
        if name not in LOADERS:
            raise RuntimeError(f"no HR bulk loader for the {name!r} database engine")
        module, _, cls = LOADERS[name].partition(":")
        loader = _chosen.setdefault(engine, getattr(importlib.import_module(module), cls)())
    return loader


__all__ = ["LOADERS", "Loader", "loader_for"]
