"""HTTP endpoints of the hr domain (thin: parse, call the service, shape the response)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
