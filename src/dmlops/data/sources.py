"""Finding and opening source files: local paths, ``file://``, ``gs://``, ``s3://``, KFP's ``minio://``,
``http(s)://``, ``pkg://<package>/<path>`` and ``dvc://<repo>/<path>@<rev>`` (see
:mod:`dmlops.data.dvc_source`); one file, a glob or a folder; the format and compression from the name. Object-store URIs are opened by :mod:`dmlops.platform.storage`.

Every byte read goes through a :class:`HashingReader`, so the result can state the size and SHA-256 of
each source file as read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

import fsspec

from dmlops.data.dvc_source import dvc_filesystem, dvc_versions
from dmlops.data.errors import IngestError
from dmlops.platform import storage

FORMATS = ("csv", "parquet", "jsonl")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zip": "zip"}
FORMAT_EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
COPY_CHUNK_BYTES = 4 * 1024 * 1024
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


@dataclass
class SourceFile:
    """One file to ingest: the URI shown to users, and how to open it."""

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str
    size: int | None
    file_format: str
    compression: str | None
    extra: dict = field(default_factory=dict)  # recorded with the source in the metadata (e.g. versions)

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    @property
    def is_http(self) -> bool:
        return "http" in _protocols(self.fs)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _filesystem(source: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """(filesystem, path inside it, URI prefix to rebuild user-facing URIs) for a source string."""
    if source.startswith("pkg://"):
        return fsspec.filesystem("file"), _package_path(source), ""
    scheme = source.split("://", 1)[0].lower() if "://" in source else "file"
    if scheme in ("gs", "gcs", "s3", "minio"):
        fs, path = storage.filesystem(source)
        return fs, path, ("gs" if scheme == "gcs" else scheme) + "://"
    if scheme in ("http", "https"):
        return fsspec.filesystem(scheme), source, ""
    if scheme == "file":
        path = source.split("://", 1)[1] if source.startswith("file://") else source
        return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(path)), ""
    raise IngestError(
        f"source {source!r}: unsupported scheme {scheme!r}; use a local path, file://, gs://, s3://, "
        "minio://, http(s)://, pkg://<package>/<path>, dvc://<repo>/<path>@<rev> or kafka://host:port/topic?group=<g>"
    )


def _package_path(source: str) -> str:
    """The file path of ``pkg://<package>/<path inside it>``, found without importing the package."""
    package, _, inner = source[len("pkg://"):].partition("/")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise IngestError(
            f"source {source!r}: Python package {package!r} is not installed; install it or use another URI"
        )
    root = os.path.realpath(list(spec.submodule_search_locations)[0])
    path = os.path.realpath(os.path.join(root, *[part for part in inner.split("/") if part]))
    if os.path.commonpath([root, path]) != root:
        raise IngestError(f"source {source!r}: the path leaves package {package!r}; name a file inside it")
    return path


def _format_and_compression(path: str, file_format: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name, e.g. ``x.csv.gz`` -> (csv, gzip); format None if unknown."""
    name = path.rsplit("/", 1)[-1].lower()
    stem, extension = os.path.splitext(name)
    compression = COMPRESSIONS.get(extension)
    if compression:
        extension = os.path.splitext(stem)[1]
    detected = FORMAT_EXTENSIONS.get(extension)
    return (detected if file_format == "auto" else file_format), compression


def _is_data_file(path: str) -> bool:
    """Folder members that hold data: not hidden, not markers such as ``_SUCCESS``."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return not name.startswith((".", "_"))


def _io_error(uri: str, error: Exception) -> IngestError:
    """A clear IngestError for a failure to reach or list a source."""
    if isinstance(error, FileNotFoundError):
        return IngestError(f"source {uri}: not found ({error}); check the path, bucket name and spelling")
    if isinstance(error, PermissionError):
        return IngestError(
            f"source {uri}: permission denied ({error}); grant this step's service account or credentials "
            "read access to it"
        )
    return IngestError(f"source {uri}: could not be read ({type(error).__name__}: {error})")


def resolve_sources(source: str, file_format: str = "auto") -> list[SourceFile]:
    """The files a source string names (one file, a glob or a folder), sorted, with format and size."""
    if file_format != "auto" and file_format not in FORMATS:
        raise IngestError(f"file_format {file_format!r} is not supported; use 'auto' or one of {FORMATS}")
    if not source or not source.strip():
        raise IngestError(
            "source is empty; pass a path or URI (local, file://, gs://, s3://, minio://, http(s)://, pkg://)"
        )
    dvc = None
    if source.strip().startswith("dvc://"):
        fs, path, dvc = dvc_filesystem(source.strip())
        prefix = ""
    else:
        fs, path, prefix = _filesystem(source.strip())
    remote_http = "http" in _protocols(fs)
    try:
        if remote_http:
            paths = [path]
        elif _GLOB_CHARACTERS.search(path):
            paths = sorted(item for item in fs.glob(path) if fs.isfile(item) and _is_data_file(item))
        elif fs.isdir(path):
            paths = sorted(item for item in fs.find(path) if _is_data_file(item))
        elif fs.exists(path):
            paths = [path]
        else:
            raise FileNotFoundError(path)
    except IngestError:
        raise
    except Exception as error:  # noqa: BLE001 - every filesystem error becomes one clear message
        raise _io_error(source, error) from None
    files = []
    for item in paths:
        item_format, compression = _format_and_compression(item, file_format)
        if item_format is None:
            if len(paths) == 1:
                raise IngestError(
                    f"source {source}: cannot tell the format of {item!r} from its name; pass file_format "
                    f"(one of {FORMATS})"
                )
            continue  # a folder or glob may hold other files (README, checksums); only data files count
        named_as_given = remote_http or (source.startswith("pkg://") and len(paths) == 1)
        uri = dvc.uri(item) if dvc else source if named_as_given else prefix + item
        size = None
        if not remote_http:
            try:
                size = fs.size(item)
            except Exception as error:  # noqa: BLE001
                raise _io_error(uri, error) from None
        extra = dvc_versions(fs, item) if dvc else {}
        files.append(SourceFile(uri, fs, item, size, item_format, compression, extra))
    if not files:
        raise IngestError(
            f"source {source}: no data files found (looked for {sorted(FORMAT_EXTENSIONS)} with optional "
            f"{sorted(COMPRESSIONS)}); check the path or glob"
        )
    return files


class HashingReader:
    """A read-only file wrapper that hashes and counts the bytes read and reports progress."""

    def __init__(self, raw: IO[bytes], on_bytes: Callable[[int], None] | None = None):
        self._raw = raw
        self._on_bytes = on_bytes
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        self.bytes_read += len(data)
        if self._on_bytes and data:
            self._on_bytes(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def drain(self) -> None:
        """Read what is left, so the hash covers the whole file."""
        while self.read(COPY_CHUNK_BYTES):
            pass


@contextmanager
def open_stream(source: SourceFile, on_bytes: Callable[[int], None] | None = None) -> Iterator[HashingReader]:
    """The source's raw bytes as a sequential, hashing stream."""
    # HTTP files are streamed (block_size=0): plain servers do not answer range requests.
    options = {"block_size": 0} if source.is_http else {}
    try:
        raw = source.fs.open(source.path, "rb", **options)
    except Exception as error:  # noqa: BLE001
        raise _io_error(source.uri, error) from None
    with raw:
        yield HashingReader(raw, on_bytes)


@contextmanager
def local_copy(source: SourceFile, on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[str, HashingReader]]:
    """A local path to the source for formats that need random access (Parquet, zip), and its hash.

    Local files are hashed in place; remote files are copied to a temporary file while hashed.
    """
    with open_stream(source, on_bytes) as stream:
        if source.is_local:
            stream.drain()
            yield source.path, stream
            return
        with tempfile.TemporaryDirectory(prefix="dmlops-ingest-") as folder:
            target = os.path.join(folder, source.path.rsplit("/", 1)[-1] or "source")
            with open(target, "wb") as copy:
                shutil.copyfileobj(stream, copy, COPY_CHUNK_BYTES)
            yield target, stream
