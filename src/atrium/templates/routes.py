"""HTTP endpoints of the templates domain (thin: parse, call the service, shape the response)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
