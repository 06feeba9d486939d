"""ingest from dvc://: a local git + DVC repository with a local remote, a tracked file read at two revisions."""

import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytest.importorskip("dvc.api", reason="the dvc extra is not installed")
if shutil.which("git") is None:
    pytest.skip("git is not installed", allow_module_level=True)

from dmlops.data.dvc_source import parse_dvc_uri  # noqa: E402
from dmlops.data.errors import IngestError  # noqa: E402
from dmlops.data.ingest import ingest  # noqa: E402

V1 = b"id,name\n1,a\n2,b\n"
V2 = b"id,name\n1,a\n2,b\n3,c\n"


def sh(folder, *command):
    environment = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """A repository with data/events.csv tracked by DVC at tags v1 and v2, pushed to a local remote and
    gone from the local cache, so reads come from the remote."""
    root = tmp_path_factory.mktemp("dvc")
    repo, remote = root / "repo", root / "remote"
    repo.mkdir()
    dvc = os.path.join(os.path.dirname(sys.executable), "dvc")
    sh(repo, "git", "init", "-q")
    sh(repo, dvc, "init", "-q")
    sh(repo, dvc, "remote", "add", "-d", "store", str(remote))
    (repo / "data").mkdir()
    commits, md5s = {}, {}
    for tag, content in (("v1", V1), ("v2", V2)):
        (repo / "data" / "events.csv").write_bytes(content)
        sh(repo, dvc, "add", "-q", "data/events.csv")
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-q", "-m", tag)
        sh(repo, "git", "tag", tag)
        commits[tag] = sh(repo, "git", "rev-parse", "HEAD")
        md5s[tag] = next(line.split()[-1] for line in (repo / "data" / "events.csv.dvc").read_text().splitlines()
                         if "md5:" in line)
    sh(repo, dvc, "push", "-q", "--all-tags")
    shutil.rmtree(repo / ".dvc" / "cache")
    return repo, commits, md5s


def run(tmp_path, uri):
    result = ingest(uri, str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"), progress=False)
    return result, pq.read_table(tmp_path / "out.parquet")


def test_a_tracked_file_at_two_revisions(repository, tmp_path):
    repo, commits, md5s = repository
    for tag, rows in (("v1", [1, 2]), ("v2", [1, 2, 3])):
        result, table = run(tmp_path, f"dvc://{repo}/data/events.csv@{tag}")
        assert table.column("id").to_pylist() == rows
        source = result.metadata()["sources"][0]
        assert source["uri"] == f"dvc://{repo}//data/events.csv@{tag}"
        assert (source["dvc_md5"], source["git_rev"]) == (md5s[tag], commits[tag])
    assert md5s["v1"] != md5s["v2"]
    result, _ = run(tmp_path, f"dvc://{repo}//data@{commits['v1']}")  # a folder, at a commit
    assert result.rows_out == 2 and result.sources[0]["git_rev"] == commits["v1"]


def test_bad_dvc_uris_are_named(repository, tmp_path):
    repo, _, _ = repository
    with pytest.raises(IngestError, match=r"events.csv@v9: could not be read \(RevError: unknown Git revision 'v9'\)"):
        run(tmp_path, f"dvc://{repo}/data/events.csv@v9")
    with pytest.raises(IngestError, match="no DVC repository"):
        run(tmp_path, f"dvc://{tmp_path}/events.csv@v1")
    assert parse_dvc_uri("dvc://https://example.com/org/data.git/raw/x.csv@main").repo == \
        "https://example.com/org/data.git"
