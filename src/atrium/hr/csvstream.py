"""Streamed CSV files as records (RFC 4180), a block at a time: memory stays flat.

Real files may start with a UTF-8 byte-order mark, use CRLF line endings, and hold a line break
inside a quoted field (``1,"Multi⏎Line",…``: spreadsheets write them). :func:`line_blocks` cuts
the stream into blocks of whole lines with C-speed ``bytes`` operations (a CRLF pair or a
multi-byte character is never split between blocks); :class:`Records` then cuts blocks into
records. A record ends at a line break outside quotes, so a quoted field may continue on the
next line, and into the next block.

Only lines that hold a quote need a look in Python. Runs of lines a caller's ``fast`` regex
matches (lines that cannot hold a quote) are handed on whole, so a clean file never costs a
Python step per line; every other record comes alone, without its line break.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Literal

from atrium.platform.errors import Unprocessable

BOM = b"\xef\xbb\xbf"
BLOCK_BYTES = 1 << 20
# A record longer than this is not one of ours (or a quote was left open); refusing it bounds
# memory for any input.
MAX_RECORD_BYTES = 8 << 20


class LineTooLong(Unprocessable):
    """A CSV record exceeded :data:`MAX_RECORD_BYTES` (the file is not one of ours)."""

    slug, title = "csv-line-too-long", "CSV record too long"


async def line_blocks(
    source: AsyncIterable[bytes], block_bytes: int = BLOCK_BYTES
) -> AsyncIterator[bytes]:
    """Blocks of whole LF-terminated lines, BOM removed; a missing last line break is added.

    Carriage returns stay: before a line break they end a record only outside quotes, which
    :class:`Records` decides.
    """
    buffer = bytearray()
    started = False
    async for chunk in source:
        buffer += chunk
        if not started:
            if len(buffer) < len(BOM) and BOM.startswith(bytes(buffer)):
                continue  # too short to tell yet
            if buffer.startswith(BOM):
                del buffer[: len(BOM)]
            started = True
        if len(buffer) < block_bytes:
            continue
        cut = buffer.rfind(b"\n")
        if cut < 0:
            _check_size(len(buffer))
            continue
        with memoryview(buffer) as view:
            block = bytes(view[: cut + 1])
        del buffer[: cut + 1]
        yield block
    _check_size(len(buffer))
    if buffer:
        if not buffer.endswith(b"\n"):
            buffer += b"\n"
        yield bytes(buffer)


def _check_size(size: int) -> None:
    if size > MAX_RECORD_BYTES:
        raise LineTooLong(
            f"a CSV record is longer than {MAX_RECORD_BYTES} bytes (is a quote left open?)"
        )


def _is_text(data: bytes) -> bool:
    """UTF-8 without NUL: what every database stores."""
    if b"\x00" in data:
        return False
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# One field of a record, as it follows its comma: quoted (commas, line breaks and "" inside),
# unquoted (a quote that does not open the field is a literal character), or empty.
_FIELD = rb'(?:"(?:[^"]|"")*"|[^,"][^,]*|)'
# Matched against "," + record: a complete record, or one that ends inside a quoted field.
_COMPLETE = re.compile(rb"(?:," + _FIELD + rb")+")
_OPEN = re.compile(rb"(?:," + _FIELD + rb')*,"(?:[^"]|"")*')
# The start of a line that continues a quoted field: content up to the closing quote.
_QUOTED = re.compile(rb'(?:[^"]|"")*')

Kind = Literal["lines", "record", "not_text"]
LINES: Kind = "lines"  # a run of whole lines the fast regex matched, line breaks included
RECORD: Kind = "record"  # one record, UTF-8 text, without its line break ("" for a blank line)
NOT_TEXT: Kind = "not_text"  # one record that is not UTF-8 or holds a NUL byte


class Records:
    """Cuts blocks of whole lines into records; a quoted field left open at the end of a line
    (or block) continues on the next. One instance per stream."""

    def __init__(self, fast: re.Pattern[bytes] | None = None) -> None:
        # ``fast`` must match runs of whole lines and never a line holding a quote.
        self._fast = fast
        self._open: bytearray | None = None  # a record whose quoted field is still open
        self._open_text = True  # every line of the open record came from a text block

    def pieces(self, block: bytes) -> Iterator[tuple[Kind, bytes]]:
        """The records of ``block`` (whole lines), in order, as (kind, bytes)."""
        text = _is_text(block)
        fast = self._fast if text else None
        position, size = 0, len(block)
        while position < size:
            if self._open is None and fast is not None:
                run = fast.match(block, position)
                if run is not None:
                    yield LINES, block[position : run.end()]
                    position = run.end()
                    continue
            end = block.index(b"\n", position)
            line = block[position:end]
            position = end + 1
            if self._open is not None:
                record = self._continue(line, text)
            elif b'"' not in line:
                record = line.removesuffix(b"\r")
            else:
                record = self._start(line, text)
            if record is not None:
                yield self._checked(record, text)

    def finish(self) -> Iterator[tuple[Kind, bytes]]:
        """A record still open at the end of the stream (its quote never closed), if any."""
        if self._open is not None:
            record, self._open = bytes(self._open), None
            yield self._checked(record, True)

    def _checked(self, record: bytes, text: bool) -> tuple[Kind, bytes]:
        text = text and self._open_text
        self._open_text = True
        if text or _is_text(record):
            return RECORD, record
        return NOT_TEXT, record

    def _start(self, line: bytes, text: bool) -> bytes | None:
        record = line.removesuffix(b"\r")
        if _COMPLETE.fullmatch(b"," + record) or not _OPEN.fullmatch(b"," + line):
            return record  # complete, or malformed quoting (the row rules say so)
        self._open = bytearray(line)
        self._open_text = text
        return None

    def _continue(self, line: bytes, text: bool) -> bytes | None:
        assert self._open is not None
        self._open_text = self._open_text and text
        self._open += b"\n"
        inside = _QUOTED.match(line)
        assert inside is not None  # the pattern matches the empty string
        close = inside.end()
        if close < len(line):  # the quote closes on this line: what follows decides
            rest = line[close + 1 :]
            tail = rest.removesuffix(b"\r")
            if not tail or _COMPLETE.fullmatch(tail) or not _OPEN.fullmatch(rest):
                self._open += line.removesuffix(b"\r")
                record, self._open = bytes(self._open), None
                return record
        self._open += line
        _check_size(len(self._open))
        return None


async def record_blocks(
    source: AsyncIterable[bytes],
    fast: re.Pattern[bytes] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> AsyncIterator[Iterator[tuple[Kind, bytes]]]:
    """The stream's records, a block at a time (consume each block before the next)."""
    records = Records(fast)
    async for block in line_blocks(source, block_bytes):
        yield records.pieces(block)
    yield records.finish()
