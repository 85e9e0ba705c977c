"""Tables of the templates domain."""

from __future__ import annotations
