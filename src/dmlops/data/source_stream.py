"""The bytes of a source file for the ingestion readers: decompressed, hashed, cut into blocks of whole
lines; read errors turned into one clear IngestError, source text escaped and cut for error messages."""

from __future__ import annotations

import bz2
import gzip
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import pyarrow as pa

from dmlops.data.errors import IngestError, SchemaError
from dmlops.data.sources import HashingReader, SourceFile, local_copy, open_stream


def shown(value: str | bytes, limit: int = 200) -> str:
    """Text from a source, fit for an error message: non-printable characters and bytes that are not UTF-8
    escaped, and cut to ``limit`` characters."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _read_error(uri: str, error: Exception) -> IngestError:
    """A clear IngestError for an error raised while reading a file's contents."""
    message = shown(str(error))
    if "Empty CSV file" in message or "Empty file" in message:
        return IngestError(f"{uri}: the file is empty (no header row); fix the export or remove the file")
    if isinstance(error, (zlib.error, EOFError, zipfile.BadZipFile, gzip.BadGzipFile)) or any(
            word in message.lower() for word in ("gzip", "zlib", "truncated", "compressed", "bz2", "zstd")):
        return IngestError(
            f"{uri}: the compressed file is truncated or corrupt ({message}); re-download or re-export it"
        )
    if "Parquet" in message or "parquet" in message:
        return IngestError(f"{uri}: not a readable Parquet file ({message}); check the file or file_format")
    return IngestError(f"{uri}: could not be read ({type(error).__name__}: {message})")


_READ_ERRORS = (pa.ArrowException, OSError, EOFError, zipfile.BadZipFile, zlib.error)


@contextmanager
def _decoded(source: SourceFile, on_bytes: Callable[[int], None] | None) -> Iterator[tuple[IO[bytes], HashingReader]]:
    """The decompressed bytes of a source, and the reader hashing its raw bytes. gzip and bz2 are
    decompressed by Python's own modules, whose errors are exceptions (Arrow's compressed stream can abort
    the process at exit after reading a corrupt gzip file)."""
    if source.compression == "zip":
        with local_copy(source, on_bytes) as (path, digest), zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist()
                       if not info.is_dir() and not info.filename.startswith("__MACOSX/")]
            if len(members) != 1:
                raise IngestError(
                    f"{source.uri}: a zip source must hold exactly one file, found "
                    f"{[shown(info.filename) for info in members]}; unzip it and ingest the folder instead"
                )
            with archive.open(members[0]) as member:
                yield member, digest
        return
    with open_stream(source, on_bytes) as stream:
        if source.compression == "gzip":
            with gzip.GzipFile(fileobj=stream, mode="rb") as unpacked:
                yield unpacked, stream
        elif source.compression == "bz2":
            with bz2.BZ2File(stream, mode="rb") as unpacked:
                yield unpacked, stream
        elif source.compression:
            yield pa.CompressedInputStream(pa.PythonFile(stream, mode="r"), source.compression), stream
        else:
            yield stream, stream


def _line_blocks(stream: IO[bytes], block_size: int) -> Iterator[bytes]:
    """Blocks of whole lines, each about ``block_size`` bytes (longer when a line is longer), each ending
    with a newline."""
    pending = b""
    while True:
        chunk = stream.read(block_size)
        if not chunk:
            break
        pending += chunk
        cut = pending.rfind(b"\n")
        if cut < 0:
            continue
        yield pending[:cut + 1]
        pending = pending[cut + 1:]
    if pending.strip():
        yield pending if pending.endswith(b"\n") else pending + b"\n"


@contextmanager
def _read_errors(uri: str) -> Iterator[None]:
    """Errors raised while reading a file's contents, as one clear IngestError."""
    try:
        yield
    except (IngestError, SchemaError):
        raise
    except _READ_ERRORS as error:
        raise _read_error(uri, error) from None


def _check_columns(source: SourceFile, columns: list[str], expected: list[str]) -> None:
    """Every file of a CSV or Parquet source has the first file's columns (in any order)."""
    if sorted(columns) != sorted(expected):
        raise IngestError(
            f"{source.uri}: header {[shown(name) for name in columns]} differs from the first file's columns "
            f"{expected}; "
            "ingest files with the same columns together"
        )
