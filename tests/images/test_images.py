"""Checks of the built images: what runs in them, as whom, with which packages, and what their layers hold."""

import hashlib
import io
import json
import re
import ssl
import tarfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from dmlops.images import IMAGE_FAMILIES

from dockerfile_reader import stages
from lock_reader import read_lock
from test_dockerfiles import (CONTAINERS, DOCKERFILES, NOT_IN_IMAGE, closures_by_image, final_environment,
                              installs_into)
from image_imports import REPO, pyproject

pytestmark = pytest.mark.images

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PUBLIC_CA_STORE = Path("/usr/share/ca-certificates")
# The build secret's mount point (BuildKit's default for `--mount=type=secret,id=ca`).
SECRET_PATH = "run/secrets/ca"
SHELL_IMPORTS = {"torch-horovod": ["horovod.torch"], "tf-horovod": ["horovod.tensorflow"], "base": [], "serve": [],
                 "spark": ["pyspark"]}


def pins() -> dict[str, str]:
    """containers/constraints.txt as {distribution: version}."""
    found = {}
    for line in (CONTAINERS / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            found[canonicalize_name(name)] = version
    return found


def pinned_requirements_of(family: str) -> set[str]:
    """The pinned distributions the image's Dockerfile installs through its extras."""
    stage_list = stages(CONTAINERS / DOCKERFILES[family][0])
    build_stage, environment = final_environment(stage_list)
    extras = set().union(*(i.extras for i in installs_into(stage_list, build_stage, environment)))
    optional = pyproject()["project"]["optional-dependencies"]
    names = {canonicalize_name(re.split(r"[\[<>=!~;]", requirement)[0]) for extra in extras
             for requirement in optional[extra]}
    return names & set(pins())


def locked_versions_of(family: str) -> dict[str, Version]:
    """The versions the lock(s) installed into the image's environment pin (scripts/lock_images.sh)."""
    stage_list = stages(CONTAINERS / DOCKERFILES[family][0])
    build_stage, environment = final_environment(stage_list)
    return {name: pin.version for install in installs_into(stage_list, build_stage, environment)
            for lock in install.locks for name, pin in read_lock(REPO / lock).pins.items()}


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_image_runs_as_non_root_user_1000(family, built, docker_client, run_in):
    reference = built(family)
    config = docker_client.images.get(reference).attrs["Config"]
    assert config["User"] == "1000"
    code, output = run_in(reference, ["id", "-u"])
    assert (code, output.strip()) == (0, "1000")
    code, output = run_in(reference, ["sh", "-c", "touch /minio/x /s3/x /gcs/x $HOME/x && echo writable"
                                           if family != "serve" else "touch $HOME/x && echo writable"])
    assert (code, output.strip()) == (0, "writable"), output


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_image_holds_the_current_source_tree(family, built, run_in):
    """The dmlops package in the image is this tree's src/dmlops, file for file (else: rebuild)."""
    reference = built(family)
    script = ("import dmlops, hashlib, json, pathlib; root = pathlib.Path(dmlops.__file__).parent; "
              "print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() "
              "for p in root.rglob('*') if p.is_file() and '__pycache__' not in p.parts}))")
    code, output = run_in(reference, ["python", "-c", script])
    assert code == 0, output
    in_image = json.loads(output.strip().splitlines()[-1])
    root = REPO / "src" / "dmlops"
    in_tree = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    differing = sorted(name for name in in_tree.keys() | in_image.keys() if in_tree.get(name) != in_image.get(name))
    assert not differing, f"{reference} was built from another tree ({differing[:10]}); rebuild: make images"


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_installed_packages_are_the_pinned_versions(family, built, run_in):
    reference = built(family)
    code, output = run_in(reference, ["python", "-m", "pip", "list", "--format=json",
                                           "--disable-pip-version-check"])
    assert code == 0, output
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(output.strip().splitlines()[-1])}
    expected = pinned_requirements_of(family)
    assert expected, f"{family}: its Dockerfile installs no pinned package"
    missing = sorted(expected - installed.keys())
    assert not missing, f"{reference} lacks pinned packages {missing}"
    wrong = {name: installed[name] for name, version in pins().items()
             if name in installed and not SpecifierSet(f"=={version}").contains(installed[name], prereleases=True)}
    assert not wrong, f"{reference} installs versions other than containers/constraints.txt pins: {wrong}"
    if "torch" in installed:
        assert installed["torch"].endswith("+cpu"), "the CPU images take torch's CPU wheel"
    differing = {name: (str(version), installed.get(name)) for name, version in locked_versions_of(family).items()
                 if name not in installed or Version(installed[name]) != version}
    assert not differing, f"{reference} differs from its lock (lock, installed): {differing}; rebuild: make images"


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_image_imports_what_its_code_needs(family, built, run_in):
    """Every dmlops module and third-party package reachable from the components compiled with this image
    (and the worker or the predictor it runs) imports inside it."""
    reference = built(family)
    modules: set[str] = set()
    for _, closure in closures_by_image()[family]:
        modules |= closure.modules | closure.third_party
    modules = {m for m in modules if (family, m) not in NOT_IN_IMAGE} | set(SHELL_IMPORTS[family])
    excused = sorted(name for (where, name) in NOT_IN_IMAGE if where == family)
    script = f"""
import importlib, json
failed = {{}}
for name in {sorted(modules)!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name.split(".")[0] not in {excused!r}:
            failed[name] = repr(error)
    except Exception as error:
        failed[name] = repr(error)
print(json.dumps(failed))
"""
    code, output = run_in(reference, ["python", "-c", script])
    assert code == 0, output
    failed = json.loads(output.strip().splitlines()[-1])
    assert not failed, f"{reference} cannot import: {failed}"


def extra_certificates() -> list[bytes]:
    """DER of the certificates in this machine's CA bundle that no public store has (neither certifi's
    bundle nor Debian's /usr/share/ca-certificates): a proxy's own CA, the one the build secret adds."""
    import certifi

    def ders(text: str) -> set[bytes]:
        return {ssl.PEM_cert_to_DER_cert(block) for block in
                re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)}

    if not HOST_CA_BUNDLE.is_file():
        return []
    public = ders(Path(certifi.where()).read_text())
    for path in PUBLIC_CA_STORE.rglob("*.crt"):
        public |= ders(path.read_text())
    return sorted(ders(HOST_CA_BUNDLE.read_text()) - public)


def layer_files(image_tar):
    """Yield (layer, path, content) of every file in every layer of a ``docker save`` stream; contents
    are read up to 2 MB (a CA bundle is smaller)."""
    with tarfile.open(fileobj=image_tar, mode="r|") as outer:
        for member in outer:
            # Docker < 25 writes <id>/layer.tar; later ones the OCI layout, blobs/sha256/<digest>.
            if not member.isfile() or not (member.name.endswith("layer.tar") or member.name.startswith("blobs/")):
                continue
            try:
                layer = tarfile.open(fileobj=outer.extractfile(member), mode="r|*")
            except tarfile.ReadError:
                continue  # a JSON blob: config or manifest
            with layer:
                for entry in layer:
                    data = layer.extractfile(entry).read() if entry.isfile() and entry.size <= 2_000_000 else b""
                    yield member.name, entry.name, data


class _Stream(io.RawIOBase):
    """A file over the chunks ``docker save`` yields."""

    def __init__(self, chunks):
        self.chunks, self.rest = iter(chunks), b""

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self.rest:
            self.rest = next(self.chunks, None)
            if self.rest is None:
                return 0
        size = min(len(buffer), len(self.rest))
        buffer[:size], self.rest = self.rest[:size], self.rest[size:]
        return size


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_no_build_secret_or_ca_bundle_in_any_layer(family, built, docker_client):
    """The CA bundle reaches pip only as a BuildKit secret: no layer and no history entry holds it."""
    reference = built(family)
    saved = docker_client.images.get(reference)
    history = json.dumps(saved.history())
    assert "BEGIN CERTIFICATE" not in history
    assert "ca-certificates.crt" not in history, "a CA bundle path was given as a build argument"
    extra = extra_certificates()
    bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else None
    markers = [base64_line(der) for der in extra]
    leaks = []
    files = pem_files = 0
    for layer, path, data in layer_files(io.BufferedReader(_Stream(saved.save(chunk_size=1 << 20)), 1 << 20)):
        files += 1
        pem_files += b"-----BEGIN CERTIFICATE-----" in data
        if path.startswith(SECRET_PATH) or path.startswith("./" + SECRET_PATH):
            leaks.append(f"{layer}: {path} (the secret's mount point)")
        elif bundle is not None and data == bundle:
            leaks.append(f"{layer}: {path} is this machine's CA bundle")
        elif any(marker in data for marker in markers):
            leaks.append(f"{layer}: {path} holds a certificate of this machine's bundle that no public store has")
    assert files > 1000 and pem_files, "the layers' files and their contents were read (certifi's bundle at least)"
    assert not leaks, f"{reference}: {leaks}"


def base64_line(der: bytes) -> bytes:
    """A 64-character line from the middle of the certificate's PEM form (the issuer's key material)."""
    pem = ssl.DER_cert_to_PEM_cert(der).encode().splitlines()
    return pem[len(pem) // 2]
