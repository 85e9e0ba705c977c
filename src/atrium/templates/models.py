"""Tables of the templates domain."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, Integer, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from atrium.platform.db import Base
from atrium.platform.sqltypes import LongText, UtcDateTime, empty_text, server_precise_now


class Template(Base):
    """``templates``: a named text template.

    ``created`` and ``modified`` are set by the database: both default to the insert time and
    every UPDATE moves ``modified`` forward (strictly, so that it also works as a version for
    optimistic concurrency): a trigger does it for any UPDATE, and the service's own UPDATEs
    set it too (``sql.next_timestamp``), so RETURNING sees the new value on every engine.
    """

    __tablename__ = "templates"
    # MySQL indexes a prefix of a text column only; 255 characters tell names apart.
    __table_args__ = (Index("ix_templates_name", "name", mysql_length=255, mariadb_length=255),)

    tidx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    templateid: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(LongText, server_default=empty_text())
    description: Mapped[str] = mapped_column(LongText, server_default=empty_text())
    content: Mapped[str] = mapped_column(LongText, server_default=empty_text())
    created: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_precise_now())
    modified: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_precise_now())
