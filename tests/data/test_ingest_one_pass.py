"""CSV in one pass where the types sniffed from the first block hold for the whole input, in two otherwise:
both give the same output and quarantine, and the types still come from every value."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dmlops.data.csv_reader as csv_reader
from dmlops.data.ingest import ingest

HEADER = b"id,ratio,count,padded,seen,name\n"


def rows(start: int, stop: int) -> bytes:
    return b"".join(b"%d,%d.5,%s,%d,2013-01-%02dT10:00:00Z,n%d\n" % (i, i, b"NA" if i % 7 == 0 else b"%d" % i, i,
                                                                     1 + i % 28, i) for i in range(start, stop))


@pytest.fixture
def passes(monkeypatch):
    """Which reading each ingest took: "one" or "two" passes."""
    taken, two_passes = [], csv_reader._two_passes

    def spy(*args):
        taken.append("two")
        return two_passes(*args)

    monkeypatch.setattr(csv_reader, "_two_passes", spy)
    return taken


def run(tmp_path, data: bytes, name: str, **options) -> tuple[pa.Table, pa.Table]:
    source = tmp_path / f"{name}.csv"
    source.write_bytes(data)
    output, quarantine = tmp_path / f"{name}.parquet", tmp_path / f"{name}.quarantine.parquet"
    result = ingest(str(source), str(output), str(quarantine), batch_size_bytes=1024, progress=False, **options)
    assert result.rows_in == result.rows_out + result.rows_quarantined
    return pq.read_table(output), pq.read_table(quarantine)


def test_types_that_hold_are_read_in_one_pass(tmp_path, passes):
    table, quarantine = run(tmp_path, HEADER + rows(0, 400), "steady")
    assert passes == []
    assert [str(field.type) for field in table.schema] == ["int64", "double", "int64", "int64",
                                                           "timestamp[ms, tz=UTC]", "string"]
    assert table.column("count").null_count == 58 and table.num_rows == 400 and quarantine.num_rows == 0


@pytest.mark.parametrize("late, column, expected", [
    (b"400,1,1.5,400,2013-02-01T10:00:00Z,n\n", "count", "double"),  # an int64 column turns double late
    (b"400,oops,400,400,2013-02-01T10:00:00Z,n\n", "ratio", "string"),  # a double column turns text
    (b"400,1,400, 400,2013-02-01T10:00:00Z,n\n", "padded", "string"),  # " 400" is no int64 (a cast says so)
    (b"400,1,400,400,2013-02-01T10:00:00.5Z,n\n", "seen", "timestamp[ns, tz=UTC]"),  # a fraction late
])
def test_a_late_value_that_breaks_the_first_types_gives_the_types_of_every_value(tmp_path, passes, late, column,
                                                                                  expected):
    table, _ = run(tmp_path, HEADER + rows(0, 400) + late + rows(401, 420), "late")
    assert passes == ["two"]
    assert str(table.schema.field(column).type) == expected and table.num_rows == 420
    assert table.column(column).to_pylist()[400] is not None


def test_one_pass_and_two_passes_write_the_same_output_and_quarantine(tmp_path, passes, monkeypatch):
    """A tolerated misfit keeps the column int64 (it is quarantined); unparsed lines are accounted either way."""
    data = (HEADER + rows(0, 300) + b"300,1,x,300,2013-02-01T10:00:00Z,n\n" + b"301,1,2\n" + rows(302, 500)
            + b'502,"open,1,1,2013-02-01T10:00:00Z,n\n')
    one = run(tmp_path, data, "one", max_bad_fraction=0.05)
    assert passes == []
    one_pass = csv_reader._one_pass
    monkeypatch.setattr(csv_reader, "_one_pass", lambda *args: one_pass(*args) and False)  # as if they had not
    two = run(tmp_path, data, "two", max_bad_fraction=0.05)
    assert passes == ["two"]
    assert one[0].equals(two[0]) and one[0].schema.field("count").type == pa.int64()
    quarantined = [quarantine.drop_columns(["_source"]).sort_by("_line") for _, quarantine in (one, two)]
    assert quarantined[0].equals(quarantined[1])
    assert quarantined[0].column("_line").to_pylist() == [302, 303, 502]
