"""Row rules and stream preparation, without a database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrium.hr import rows as r
from atrium.hr.csvstream import LineTooLong, decode_lines, line_blocks, to_copy_csv
from atrium.hr.pgcsv import fast_lines


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


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
async def test_line_blocks_strip_bom_and_crlf_across_chunk_boundaries(chunk: int) -> None:
    data = b"\xef\xbb\xbf1,a\r\n2,b\r\n\r\n3,\xc3\xa9\r\n4,last"
    blocks = await _blocks(data, chunk, block=4)
    assert b"".join(blocks) == b"1,a\n2,b\n\n3,\xc3\xa9\n4,last\n"
    assert all(block.endswith(b"\n") for block in blocks)
    lines = [line for block in blocks for line in decode_lines(block)]
    assert lines == ["1,a", "2,b", "", "3,é", "4,last"]


async def test_a_bom_alone_or_a_partial_bom() -> None:
    assert await _blocks(b"\xef\xbb\xbf", 1, 4) == []
    assert b"".join(await _blocks(b"\xef\xbbx\n", 1, 4)) == b"\xef\xbbx\n"


async def test_an_endless_line_is_refused() -> None:
    with pytest.raises(LineTooLong):
        await _blocks(b"x" * (9 << 20), 1 << 20, 1 << 20)


def test_copy_csv_marks_lines_for_sql() -> None:
    fast = fast_lines(r.JOBS)
    out = to_copy_csv(b'1,Analyst\n2,\n3,"q"\n4,ok\n', fast, 2)
    assert out == b'1,Analyst,\n,,"2,"\n,,"3,""q"""\n4,ok,\n'
    assert to_copy_csv(b"1,a\n2,\xff\n", fast, 2) == b"1,a,\n,,\n"


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
