"""ingest on hostile CSV files built by hand: every physical line is accounted for, whatever the file does."""

import gzip
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import IngestError
from dmlops.data.ingest import ingest

GOOD = b"".join(b"%d,name%d\n" % (i, i) for i in range(100))


def run(tmp_path, source, **options):
    options.setdefault("progress", False)
    result = ingest(str(source), str(tmp_path / "out.parquet"), str(tmp_path / "quarantine.parquet"), **options)
    assert result.rows_in == result.rows_out + result.rows_quarantined
    return result, pq.read_table(tmp_path / "out.parquet"), pq.read_table(tmp_path / "quarantine.parquet")


def test_an_unclosed_quote_cannot_hide_the_rows_after_it(tmp_path):
    source = tmp_path / "runaway.csv"
    source.write_bytes(b"id,name\n" + GOOD + b'109,"unclosed,and the rest\n' + GOOD)
    result, table, quarantine = run(tmp_path, source, max_bad_fraction=0.01)
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (201, 200, 1)
    assert quarantine.column("_line").to_pylist() == [102]
    assert quarantine.column("_reason").to_pylist() == [
        "unclosed quote: the quoted value opened on line 102 is not closed on that line (values spanning lines "
        "are not read)"]
    assert quarantine.column("_raw").to_pylist() == ['109,"unclosed,and the rest']
    assert table.column("id").to_pylist() == list(range(100)) * 2
    with pytest.raises(IngestError, match="opened on line 102"):
        run(tmp_path, source)


def test_a_quote_closed_lines_later_is_no_record(tmp_path):
    source = tmp_path / "spanning.csv"
    source.write_bytes(b'id,name\n1,a\n2,"b\n3,c\n4,d"\n5,e\n')
    result, table, quarantine = run(tmp_path, source, max_bad_fraction=0.5)
    assert result.rows_in == 5
    assert table.column("id").to_pylist() == [1, 3, 4, 5]
    assert table.column("name").to_pylist() == ["a", "c", 'd"', "e"]
    assert quarantine.column("_line").to_pylist() == [3]


def test_undecodable_ragged_row_is_quarantined_like_any_bad_row(tmp_path):
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"id,name\n" + GOOD + b"109,caf\xe9,x\n" + GOOD)
    result, table, quarantine = run(tmp_path, source, max_bad_fraction=0.5)
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (201, 200, 1)
    assert quarantine.column("_reason").to_pylist() == ["expected 2 columns, got 3"]
    assert quarantine.column("_raw").to_pylist() == ["109,caf\\xe9,x"]
    assert quarantine.column("_line").to_pylist() == [102]


@pytest.mark.parametrize("position", [0, 60_000])
def test_an_integer_overflow_is_quarantined_wherever_it_sits(tmp_path, position):
    rows = [b"%d,%d.5" % (i, i) for i in range(60_001)]
    rows.insert(position, b"12345678901234567890123456,1.5")
    source = tmp_path / "ids.csv"
    source.write_bytes(b"id,score\n" + b"\n".join(rows) + b"\n")
    result, table, quarantine = run(tmp_path, source, max_bad_fraction=0.001, batch_size_bytes=64 * 1024)
    assert table.schema.field("id").type == pa.int64() and table.column("id").to_pylist()[:2] == [0, 1]
    assert quarantine.column("id").to_pylist() == ["12345678901234567890123456"]
    assert quarantine.column("_line").to_pylist() == [position + 2]
    assert quarantine.column("_reason")[0].as_py().startswith("id: integer out of the int64 range")
    with pytest.raises(IngestError, match="id: integer out of the int64 range"):
        run(tmp_path, source, batch_size_bytes=64 * 1024)


@pytest.mark.parametrize("position", [0, 5_000])
def test_a_json_integer_beyond_int64_is_quarantined_wherever_it_sits(tmp_path, position):
    lines = [b'{"id": %d, "score": %d.5}' % (i, i) for i in range(5_000)]
    lines.insert(position, b'{"id": 12345678901234567890123456, "score": 1.5}')
    source = tmp_path / "ids.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result, table, quarantine = run(tmp_path, source, max_bad_fraction=0.001, batch_size_bytes=4096)
    assert table.schema.field("id").type == pa.int64() and table.schema.field("score").type == pa.float64()
    assert table.num_rows == 5_000 and table.column("id").to_pylist()[:2] == [0, 1]
    assert quarantine.column("id").to_pylist() == ["12345678901234567890123456"]
    assert quarantine.column("_reason")[0].as_py().startswith("id: integer out of the int64 range")


def test_types_are_inferred_from_every_value_not_the_first_block(tmp_path):
    source = tmp_path / "late_float.csv"
    source.write_bytes(b"id,value\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20_000)) + b"20000,0.5\n")
    result, table, quarantine = run(tmp_path, source, batch_size_bytes=4096)
    assert table.schema.field("value").type == pa.float64() and table.column("value")[-1].as_py() == 0.5
    assert quarantine.num_rows == 0
    source.write_bytes(b"id,value\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(20_000)) + b"20000,later\n")
    _, table, _ = run(tmp_path, source, batch_size_bytes=4096)
    assert table.schema.field("value").type == pa.string() and table.column("value")[-1].as_py() == "later"


def test_a_failed_ingest_publishes_no_dataset(tmp_path):
    source = tmp_path / "bad.csv"
    source.write_bytes(b"id\n1\nx\n3\n")
    with pytest.raises(IngestError):
        run(tmp_path, source, schema={"columns": {"id": {"type": "int64"}}})
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "quarantine.parquet"]  # the bad rows, to inspect
    packed = gzip.compress(b"id,name\n" + GOOD * 50)
    (tmp_path / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "quarantine.parquet").unlink()
    with pytest.raises(IngestError, match="truncated or corrupt"):
        run(tmp_path, tmp_path / "cut.csv.gz", batch_size_bytes=1024)
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "cut.csv.gz"]


def test_carriage_return_only_line_ends_are_named(tmp_path):
    source = tmp_path / "mac.csv"
    source.write_bytes(b"id,name\r1,a\r2,b\r")
    with pytest.raises(IngestError, match="carriage return only"):
        run(tmp_path, source)
    source.write_bytes(b"id,name\r\n1,a\r\n\r\n2,b\r\n")
    result, table, _ = run(tmp_path, source)
    assert result.rows_in == 2 and table.column("name").to_pylist() == ["a", "b"]


def test_null_values_are_an_option(tmp_path):
    source = tmp_path / "nulls.csv"
    source.write_bytes(b"id,name\n1,NA\n2,-\n3,\n")
    _, table, _ = run(tmp_path, source)
    assert table.column("name").to_pylist() == [None, "-", None]
    _, table, _ = run(tmp_path, source, null_values=["-"])
    assert table.column("name").to_pylist() == ["NA", None, ""]


def test_binary_garbage_is_escaped_and_cut_in_errors(tmp_path):
    source = tmp_path / "garbage.csv"
    source.write_bytes(bytes(range(255, -1, -1)) * 40 + b"\n1\n")
    with pytest.raises(IngestError) as failure:
        run(tmp_path, source)
    message = str(failure.value)
    assert message.isprintable() and len(message) < 600 and "\\xff\\xfe" in message and "more characters" in message


CHILD = """
import sys
from dmlops.data.errors import IngestError
from dmlops.data.ingest import ingest
for source in sys.argv[1:]:
    try:
        ingest(source, source + ".parquet", source + ".q.parquet", progress=False)
    except IngestError as error:
        print("refused:", error)
"""


def test_corrupt_gzip_never_aborts_the_process(tmp_path):
    packed = gzip.compress(b"id,name\n" + GOOD * 100)
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    not_gzip = tmp_path / "not_gzip.csv.gz"
    not_gzip.write_bytes(b"id,name\n" + GOOD)
    for _ in range(20):
        done = subprocess.run([sys.executable, "-c", CHILD, str(truncated), str(not_gzip)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("truncated or corrupt") == 2, done.stdout
