"""Tables of the templates domain."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Integer, Text, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from atrium.platform.db import Base


class Template(Base):
    """``templates``: a named text template.

    ``created`` and ``modified`` are set by the database: both default to the insert time and a
    trigger moves ``modified`` forward on every UPDATE (strictly, so that it also works as a
    version for optimistic concurrency).
    """

    __tablename__ = "templates"

    tidx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    templateid: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text, server_default="", index=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    content: Mapped[str] = mapped_column(Text, server_default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    modified: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
