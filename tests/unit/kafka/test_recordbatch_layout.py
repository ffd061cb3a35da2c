"""smartbroker/recordbatch.py: a partial header reader derived from the one shared layout
reads the same values as the full one."""

from __future__ import annotations

import pytest

from smartbroker.recordbatch import FIELDS, HEADER, fields


def test_a_partial_reader_reads_what_the_whole_header_says() -> None:
    values = (1 << 40, 49, 7, 2, 0xDEADBEEF, 0x31, 2, 1_700_000_000_000, 1_700_000_000_009,
              123456789, 3, 17, 3)
    data = b"junk" + HEADER.pack(*values) + b"records"
    picked = ("batchLength", "attributes", "producerId", "recordsCount")
    reader = fields(*picked)
    assert reader.size == HEADER.size
    assert reader.unpack_from(data, 4) == tuple(values[FIELDS.index(n)] for n in picked)
    assert fields(*FIELDS).unpack_from(data, 4) == values


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="recordCount"):
        fields("batchLength", "recordCount")
