"""The last line of defence between a secret and a log line.

Nothing should log a secret in the first place; this module makes sure that a mistake does not
become a leak. :func:`redact` masks the configured secret values themselves and everything that
looks like one: ``password=…``/``"api_key": "…"`` pairs, ``Bearer …`` credentials, passwords in
URLs, PEM private keys and Atrium API keys (``atr_…``). Every log formatter runs its finished
line through it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from atrium.settings import Settings

MASK = "***"

# Names whose values are secrets, matched at the end of a key (``ATRIUM_TOKEN_SECRET``,
# ``x-api-key``, ``"password"``) right before ``=`` or ``:``; what precedes them stays as is.
_SENSITIVE_KEYS = (
    r"api[-_]?key|apikey|access[-_]?key|token|secret|password|passwd|passphrase|pwd"
    r"|private[-_]?key|authorization|credentials?|signature|cookie"
)
_KEY_VALUE = re.compile(
    r"(?P<key>" + _SENSITIVE_KEYS + r")(?P<kq>\\?[\"']?)(?P<sep>\s*[:=]\s*)"
    r"(?:(?P<q>\\?[\"'])(?:(?!(?P=q)).)*(?P=q)"
    r"|(?![{\[])(?:(?:Bearer|Basic|Digest|Token)\s+)?[^\s\"'\\&,;}\]]+)",
    re.IGNORECASE,
)
# Every name above contains one of these (lower case).
_KEY_STEMS = ("key", "token", "secret", "pass", "pwd", "auth", "credential", "signature", "cookie")
_AUTH_STEMS = ("bearer", "basic", "digest", "token")
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Digest|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@\"'\\]*:)[^@\s/\"'\\]+@", re.I)
# Atrium API keys (``atr_`` + 43 URL-safe characters), even when logged as bare words.
_API_KEY = re.compile(r"\batr_[A-Za-z0-9_-]{20,}")
# The body may contain escaped newlines (``\n`` inside a JSON string); an unterminated key
# (a truncated message) is masked up to where its base64 stops.
_PEM = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[A-Za-z0-9+/=\s\\]*"
    r"(?:-----END [A-Z0-9 ]*PRIVATE KEY-----)?"
)

# Exact secret values below this length would mask ordinary words; the patterns above still
# catch them where they appear as ``key=value``.
MIN_SECRET_LENGTH = 6

_known: set[str] = set()
_ordered: tuple[str, ...] = ()


def _mask_pair(match: re.Match[str]) -> str:
    key_quote = match.group("kq")
    # An unquoted JSON value (number, null) becomes a string, so the line stays valid JSON.
    quote = match.group("q") or ('"' if key_quote == '"' else "")
    return f"{match.group('key')}{key_quote}{match.group('sep')}{quote}{MASK}{quote}"


def redact(text: str) -> str:
    """Mask every known secret value and anything shaped like a credential in ``text``."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    # Substring tests first: most lines (access lines) contain none of these and skip the regexes.
    lowered = text.lower()
    if "private key" in lowered:
        text = _PEM.sub("[REDACTED PRIVATE KEY]", text)
    if any(stem in lowered for stem in _KEY_STEMS):
        text = _KEY_VALUE.sub(_mask_pair, text)
    if any(scheme in lowered for scheme in _AUTH_STEMS):
        text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if "atr_" in text:
        text = _API_KEY.sub("atr_" + MASK, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return text


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so that :func:`redact` masks them wherever they appear."""
    global _ordered
    for value in values:
        if value and len(value) >= MIN_SECRET_LENGTH:
            _known.add(value)
    # Longest first, so a secret containing another is masked whole.
    _ordered = tuple(sorted(_known, key=len, reverse=True))


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value in ``settings``: each ``SecretStr`` and the passwords of its URLs."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
        elif isinstance(value, str) and "://" in value:
            values.extend(_url_passwords(value))
    return values


def _url_passwords(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    # Logged as written (percent-encoded) or decoded: mask both spellings.
    return [password, unquote(password)] if password else []
