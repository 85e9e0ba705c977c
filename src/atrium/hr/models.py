"""Tables of the hr domain."""

from __future__ import annotations
