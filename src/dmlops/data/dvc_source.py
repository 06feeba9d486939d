"""``dvc://`` sources: a file, glob or folder of a DVC repository at a git revision, read through ``dvc.api``.

``dvc://<repo>/<path>@<rev>``: ``<repo>`` is a local repository folder (found by walking up ``<path>`` to the
folder holding ``.dvc``) or a git URL (``https://``, ``ssh://``, ``git@``, ``file://``; the repository part
ends at ``.git/``), or either followed by ``//`` to mark where the path starts; ``@<rev>`` is a branch,
tag or commit (none: the workspace of a local repository, the default branch of a URL). DVC-tracked files
come from the DVC cache or the repository's default remote; each file's DVC md5 and the resolved git
commit are recorded with the source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dmlops.data.errors import IngestError

URL_PREFIXES = ("https://", "http://", "ssh://", "git@", "git://", "file://")


@dataclass
class DvcLocation:
    """What a ``dvc://`` URI names: the repository, the path inside it and the revision."""

    repo: str
    path: str
    rev: str | None

    def uri(self, path: str) -> str:
        """The user-facing URI of one file of this location."""
        return f"dvc://{self.repo}//{path}" + (f"@{self.rev}" if self.rev else "")


def parse_dvc_uri(uri: str) -> DvcLocation:
    """Split ``dvc://<repo>/<path>@<rev>`` into repository, path and revision."""
    rest = uri[len("dvc://"):]
    head, slash, last = rest.rpartition("/")
    rev = None
    if "@" in last:
        last, _, rev = last.rpartition("@")
    rest = head + slash + last
    scheme_end = rest.find("://") + 3 if rest.startswith(URL_PREFIXES) and "://" in rest else 0
    separator = rest.find("//", scheme_end)
    if separator >= 0:
        repo, path = rest[:separator], rest[separator + 2:]
        repo = repo if rest.startswith(URL_PREFIXES) else os.path.abspath(os.path.expanduser(repo))
    elif rest.startswith(URL_PREFIXES):
        repo, marker, path = rest.partition(".git/")
        if not marker:
            raise IngestError(f"source {uri!r}: cannot tell where the repository URL ends; write it as "
                              "dvc://<url>.git/<path>@<rev> or dvc://<url>//<path>@<rev>")
        repo += ".git"
    else:
        repo, path = _local_repository(uri, os.path.abspath(os.path.expanduser(rest)))
    if not path.strip("/"):
        raise IngestError(f"source {uri!r}: no path inside the repository; use dvc://<repo>/<path>@<rev>")
    return DvcLocation(repo, path.strip("/"), rev or None)


def _local_repository(uri: str, full_path: str) -> tuple[str, str]:
    """(repository folder, path inside it) for a local path: the nearest folder above holding ``.dvc``."""
    folder = os.path.dirname(full_path)
    while True:
        if os.path.isdir(os.path.join(folder, ".dvc")):
            return folder, os.path.relpath(full_path, folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            raise IngestError(f"source {uri!r}: no DVC repository (a folder holding .dvc) above "
                              f"{full_path}; check the path or use dvc://<repo>//<path>@<rev>")
        folder = parent


def dvc_filesystem(uri: str):
    """(the ``dvc.api.DVCFileSystem`` at the URI's revision, the path inside it, the parsed location)."""
    location = parse_dvc_uri(uri)
    try:
        from dvc.api import DVCFileSystem
    except ImportError:
        raise IngestError(f"source {uri!r}: dvc:// needs the dvc extra (pip install 'dmlops[dvc]')") from None
    fs = DVCFileSystem(location.repo, rev=location.rev)  # lazy: a bad revision fails on the first listing
    return fs, location.path, location


def dvc_versions(fs, path: str) -> dict[str, Any]:
    """What identifies a file's version: its DVC md5 (None for a file git tracks itself) and the commit."""
    info = fs.info(path)
    return {"dvc_md5": info.get("md5"), "git_rev": fs.repo.get_rev()}
