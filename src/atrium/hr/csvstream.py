"""Byte-level preparation of streamed CSV files, a block at a time (memory stays flat).

Real files may start with a UTF-8 byte-order mark and use CRLF line endings. Both are handled
on whole blocks with C-speed ``bytes`` operations, never per line in Python: blocks are cut at
the last newline, so a CRLF pair or a multi-byte character is never split between two blocks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator

from atrium.platform.errors import Unprocessable

BOM = b"\xef\xbb\xbf"
BLOCK_BYTES = 1 << 20
# A line longer than this is not a CSV record of ours; refusing it bounds memory for any input.
MAX_LINE_BYTES = 8 << 20


class LineTooLong(Unprocessable):
    """A CSV line exceeded :data:`MAX_LINE_BYTES` (the file is not one of ours)."""

    slug, title = "csv-line-too-long", "CSV line too long"


async def line_blocks(
    source: AsyncIterable[bytes], block_bytes: int = BLOCK_BYTES
) -> AsyncIterator[bytes]:
    """Blocks of whole LF-terminated lines: BOM removed, CRLF turned into LF."""
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
            if len(buffer) > MAX_LINE_BYTES:
                raise LineTooLong(f"a line is longer than {MAX_LINE_BYTES} bytes")
            continue
        with memoryview(buffer) as view:
            block = bytes(view[: cut + 1])
        del buffer[: cut + 1]
        yield block.replace(b"\r\n", b"\n")
    if len(buffer) > MAX_LINE_BYTES:
        raise LineTooLong(f"a line is longer than {MAX_LINE_BYTES} bytes")
    if buffer:
        if not buffer.endswith(b"\n"):
            buffer += b"\n"
        yield bytes(buffer).replace(b"\r\n", b"\n")


def _is_text(line: bytes) -> bool:
    if b"\x00" in line:
        return False
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _block_is_text(block: bytes) -> bool:
    if b"\x00" in block:
        return False
    if block.isascii():
        return True
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def to_copy_csv(block: bytes, fast_line: re.Pattern[bytes], columns: int) -> bytes:
    """A block of lines as ``COPY … (FORMAT csv)`` input for a typed staging table.

    Runs of lines that ``fast_line`` matches (already valid for the typed columns, so COPY
    cannot fail on them) pass through with an empty last field appended (``raw`` = NULL).
    Every other line becomes ``columns`` empty (NULL) fields plus the line, quoted, in ``raw``
    for SQL to examine; a line that is not UTF-8 text or holds a NUL byte (PostgreSQL stores
    neither) becomes all NULLs. The regex runs over whole runs of lines in C, so clean input
    never costs a Python step per line.
    """
    empty = b"," * columns
    out: list[bytes] = []
    if not _block_is_text(block):
        for line in block.split(b"\n")[:-1]:
            if not _is_text(line):
                out.append(empty + b"\n")
            elif fast_line.fullmatch(line + b"\n"):
                out.append(line + b",\n")
            else:
                out.append(empty + b'"' + line.replace(b'"', b'""') + b'"\n')
        return b"".join(out)
    position, size = 0, len(block)
    while position < size:
        run = fast_line.match(block, position)
        if run is not None:
            end = run.end()
            out.append(block[position:end].replace(b"\n", b",\n"))
        else:
            end = block.index(b"\n", position) + 1
            line = block[position : end - 1]
            out.append(empty + b'"' + line.replace(b'"', b'""') + b'"\n')
        position = end
    return b"".join(out)


def decode_lines(block: bytes) -> Iterator[str | None]:
    """The lines of a block as text; None for a line that is not UTF-8 or holds a NUL."""
    if _block_is_text(block):
        text = block.decode("utf-8").split("\n")
        text.pop()  # blocks end with a newline
        yield from text
        return
    lines = block.split(b"\n")
    lines.pop()
    for line in lines:
        yield line.decode("utf-8") if _is_text(line) else None
