"""Tables of the certificates domain."""

from __future__ import annotations
