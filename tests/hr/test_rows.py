"""Row rules and stream preparation, without a database."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrium.hr import rows as r
from atrium.hr.bulk.postgres_csv import copy_csv, fast_lines
from atrium.hr.csvstream import (
    LINES,
    NOT_TEXT,
    RECORD,
    LineTooLong,
    Records,
    line_blocks,
    record_blocks,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-11-07T02:48:42Z", datetime(2021, 11, 7, 2, 48, 42, tzinfo=UTC)),
        ("2021-11-07 02:48:42", datetime(2021, 11, 7, 2, 48, 42, tzinfo=UTC)),
        ("2021-11-07T02:48:42.5+01:00", datetime(2021, 11, 7, 1, 48, 42, 500000, tzinfo=UTC)),
        ("2020-02-29T00:00:00Z", datetime(2020, 2, 29, tzinfo=UTC)),
        ("2021-02-29T00:00:00Z", None),
        ("2021-04-31T00:00:00Z", None),
        ("0000-01-01T00:00:00Z", None),
        ("2021-11-07T24:00:00Z", None),
        ("2021-11-07T23:59:60Z", None),
        ("2021-11-07T02:48Z", None),
        ("2021-11-07", None),
        ("2021-11-07T02:48:42.1234567Z", None),
        ("2021-11-07T02:48:42+16:00", None),
        ("2021-11-07t02:48:42z", None),
        ("٢٠٢١-11-07T02:48:42Z", None),
        ("0001-01-01T00:00:00+01:00", None),
        (" 2021-11-07T02:48:42Z", None),
    ],
)
def test_parse_datetime(text: str, expected: datetime | None) -> None:
    assert r.parse_datetime(text) == expected


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ("a,b,c", ["a", "b", "c"]),
        ("a,,", ["a", "", ""]),
        ('1,"x, y",2', ["1", "x, y", "2"]),
        ('1,"say ""hi""",2', ["1", 'say "hi"', "2"]),
        ('1,a"b,2', ["1", 'a"b', "2"]),
        ('"",x', ["", "x"]),
        ('1,"open,2', None),
        ('1,"x"y,2', None),
    ],
)
def test_split_line(line: str, fields: list[str] | None) -> None:
    assert r.split_line(line) == fields


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (["1", "x"], []),
        (["0", "x"], []),
        (["-1", "x"], []),
        (["01", "x"], ["id is not an integer"]),
        (["+1", "x"], ["id is not an integer"]),
        ([" 1", "x"], ["id is not an integer"]),
        (["1.0", "x"], ["id is not an integer"]),
        (["2147483647", "x"], []),
        (["-2147483648", "x"], []),
        (["2147483648", "x"], ["id is out of range (-2147483648..2147483647)"]),
        (["", ""], ["id is empty", "department is empty"]),
        (["1"], ["expected 2 fields, got 1"]),
    ],
)
def test_check_fields(fields: list[str], errors: list[str]) -> None:
    assert r.check_fields(r.DEPARTMENTS, fields)[1] == errors


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _blocks(data: bytes, size: int, block: int) -> list[bytes]:
    return [b async for b in line_blocks(_chunks(data, size), block_bytes=block)]


async def _records(
    data: bytes, size: int = 1 << 20, block: int = 1 << 20, fast: re.Pattern[bytes] | None = None
) -> list[tuple[str, bytes]]:
    found = []
    async for pieces in record_blocks(_chunks(data, size), fast, block):
        found.extend(pieces)
    return found


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
async def test_line_blocks_strip_the_bom_and_records_the_crlf(chunk: int) -> None:
    data = b"\xef\xbb\xbf1,a\r\n2,b\r\n\r\n3,\xc3\xa9\r\n4,last"
    blocks = await _blocks(data, chunk, block=4)
    assert b"".join(blocks) == b"1,a\r\n2,b\r\n\r\n3,\xc3\xa9\r\n4,last\n"
    assert all(block.endswith(b"\n") for block in blocks)
    assert await _records(data, chunk, block=4) == [
        (RECORD, b"1,a"), (RECORD, b"2,b"), (RECORD, b""), (RECORD, b"3,\xc3\xa9"),
        (RECORD, b"4,last"),
    ]  # fmt: skip


async def test_a_bom_alone_or_a_partial_bom() -> None:
    assert await _blocks(b"\xef\xbb\xbf", 1, 4) == []
    assert b"".join(await _blocks(b"\xef\xbbx\n", 1, 4)) == b"\xef\xbbx\n"


async def test_an_endless_line_is_refused() -> None:
    with pytest.raises(LineTooLong):
        await _blocks(b"x" * (9 << 20), 1 << 20, 1 << 20)


@pytest.mark.parametrize(("chunk", "block"), [(1, 1), (3, 5), (1 << 20, 1 << 20)])
async def test_a_quoted_field_may_hold_line_breaks_across_blocks(chunk: int, block: int) -> None:
    data = (
        b'1,"Multi\nLine",x\n'  # LF inside quotes
        b'2,"CR\r\nLF",y\r\n'  # CRLF inside quotes is the field's, the last one the record's
        b'3,"a ""q""\n\n, b"\n'  # quotes, an empty line and a comma inside the field
        b'4,a"b,"c\nd"\n'  # a quote that does not open a field is a plain character
        b'5,"x"y,z\n'  # malformed: the record ends at its line
        b"6,plain\n"
        b'7,"never closed\n8,swallowed\n'
    )
    assert await _records(data, chunk, block) == [
        (RECORD, b'1,"Multi\nLine",x'),
        (RECORD, b'2,"CR\r\nLF",y'),
        (RECORD, b'3,"a ""q""\n\n, b"'),
        (RECORD, b'4,a"b,"c\nd"'),
        (RECORD, b'5,"x"y,z'),
        (RECORD, b"6,plain"),
        (RECORD, b'7,"never closed\n8,swallowed'),
    ]
    assert r.split_line('2,"CR\r\nLF",y') == ["2", "CR\r\nLF", "y"]
    assert r.split_line('7,"never closed\n8,swallowed') is None


async def test_records_that_are_not_text_are_marked_whole() -> None:
    data = b'1,"a\n\xff"\n2,ok\n3,"nul\x00\nx"\n4,"fine\nagain"\n'
    assert await _records(data, 1, 1) == [
        (NOT_TEXT, b'1,"a\n\xff"'),
        (RECORD, b"2,ok"),
        (NOT_TEXT, b'3,"nul\x00\nx"'),
        (RECORD, b'4,"fine\nagain"'),
    ]


async def test_a_quote_left_open_cannot_grow_without_bound() -> None:
    data = b'1,"open\n' + (b"x" * 1000 + b"\n") * (9 << 10)
    with pytest.raises(LineTooLong, match="quote left open"):
        await _records(data, 1 << 20, 1 << 20)


async def test_fast_runs_come_whole_and_quoted_records_alone() -> None:
    fast = re.compile(rb'(?:[^"\n]*\n)+')
    assert await _records(b'1,a\r\n2,b\n3,"c\nd"\n4,e\n', fast=fast) == [
        (LINES, b"1,a\r\n2,b\n"),
        (RECORD, b'3,"c\nd"'),
        (LINES, b"4,e\n"),
    ]


_CELLS = st.text(st.sampled_from('ab ,"\r\né\t'), max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(_CELLS, min_size=1, max_size=4), min_size=1, max_size=8),
    st.sampled_from(["\n", "\r\n"]),
    st.integers(1, 9),
    st.integers(1, 9),
)
def test_records_read_what_the_csv_module_writes(
    rows: list[list[str]], terminator: str, chunk: int, block: int
) -> None:
    if terminator == "\n":  # then the writer leaves a CR unquoted: a record end to readers
        rows = [[cell.replace("\r", "") for cell in row] for row in rows]
    rows = [row for row in rows if row != [""]]  # written as a blank line, which is no record
    out = io.StringIO()
    csv.writer(out, lineterminator=terminator).writerows(rows)
    records = asyncio.run(_records(out.getvalue().encode(), chunk, block))
    assert [kind for kind, _ in records] == [RECORD] * len(rows)
    assert [r.split_line(data.decode()) for _, data in records] == rows


def test_copy_csv_marks_records_for_sql() -> None:
    fast = fast_lines(r.JOBS)
    pieces = Records(fast).pieces(b'1,Analyst\r\n2,\n3,"q\nr"\n4,ok\n')
    assert copy_csv(pieces, 2) == b'1,Analyst,\n,,"2,"\n,,"3,""q\nr"""\n4,ok,\n'
    assert copy_csv(Records(fast).pieces(b"1,a\n2,\xff\n"), 2) == b',,"1,a"\n,,\n'


# The fast lane hands lines straight to COPY's casts: anything it lets through must be a row
# the Python rules accept (else COPY could fail, or accept what the other paths refuse).
_ALPHABET = '0123456789-:TZ., +"ab\t1'


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(_ALPHABET, max_size=12),
            st.sampled_from(["2021-02-29T00:00:00Z", "2020-02-29 23:59:59.5+15:59", "0"]),
            st.builds(
                lambda y, mo, d, h, mi, s: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z",
                st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32),
                st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
            ),
        ),
        min_size=4,
        max_size=6,
    )
)  # fmt: skip
def test_fast_lane_only_passes_valid_rows(fields: list[str]) -> None:
    line = ",".join(fields)
    if "\n" in line:
        return
    if fast_lines(r.HIRED_EMPLOYEES).fullmatch(line.encode() + b"\n"):
        row, errors = r.check_fields(r.HIRED_EMPLOYEES, line.split(","))
        assert row is not None, (line, errors)


# The batch path checks rows with a fast pydantic filter first; whatever it decides must be
# exactly what the one-row Python rules decide.
_VALUES = st.one_of(
    st.integers(min_value=-(2**33), max_value=2**33),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.sampled_from(
        ["", " ", "\u00a0", "a\x00", "Ann", "2021-11-07T02:48:42Z", "2021-02-29T00:00:00Z",
         "2020-02-29 00:00:00.5+15:59", "0001-01-01T00:00:00+01:00", "7", "  x  "]
    ),
    st.text(max_size=5),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "name", "datetime", "department_id", "job_id", "extra"]),
        _VALUES,
        min_size=4,
    )
)
def test_batch_filter_agrees_with_the_row_rules(row: dict[str, object]) -> None:
    assert r.check_json_rows(r.HIRED_EMPLOYEES, [row]) == [r.check_json_row(r.HIRED_EMPLOYEES, row)]


_INTS = st.one_of(
    st.sampled_from([0, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, True]), st.integers()
)
_NAMES = st.one_of(
    st.sampled_from(["Ann", " ", "\u00a0", "\u2003x", "a\x00b", "\t\n", "Zoë"]), st.text(max_size=4)
)
_DATETIMES = st.one_of(
    st.sampled_from(
        ["2021-11-07T02:48:42Z", "2021-02-29T00:00:00Z", "2020-02-29 00:00:00.5+15:59",
         "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2021-04-31T00:00:00Z",
         "2021-11-07T02:48:42.1234567Z", "2021-11-07T02:48:42+16:00"]
    ),
    st.text("0123456789-:TZ. +", max_size=22),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries(
    {"id": _INTS, "name": _NAMES, "datetime": _DATETIMES, "department_id": _INTS, "job_id": _INTS}
))  # fmt: skip
def test_batch_filter_agrees_on_complete_rows(row: dict[str, object]) -> None:
    assert r.check_json_rows(r.HIRED_EMPLOYEES, [row]) == [r.check_json_row(r.HIRED_EMPLOYEES, row)]
