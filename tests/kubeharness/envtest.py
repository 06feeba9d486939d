"""A real Kubernetes API server for the tests: kube-apiserver on etcd, no controllers, no kubelet.

controller-runtime's *envtest* convention (sigs.k8s.io/controller-runtime ``pkg/envtest``): the folder
named by ``KUBEBUILDER_ASSETS`` holds ``kube-apiserver``, ``etcd`` and ``kubectl``. Without it,
``DMLOPS_ENVTEST_KIT`` may name a folder with ``kube-apiserver.xz`` (Kubernetes v1.36.2, linux/amd64):
it is unpacked once into ``~/.cache/dmlops/envtest/<sha256>/`` and checked against its known sha256,
and ``etcd`` (Debian's ``etcd-server``) and ``kubectl`` are linked there from ``PATH``.

:func:`start_envtest` starts etcd and kube-apiserver on free 127.0.0.1 ports with RBAC authorization,
an admin token in ``system:masters``, a service-account signing key pair and self-signed serving
certificates, writes a kubeconfig, and installs the repository's vendored CRDs (``crds/``) server-side,
waiting until each is Established. Nothing reconciles a custom resource unless a test does.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from kubernetes import client

from dmlops.platform.local import free_ports

REPOSITORY = Path(__file__).resolve().parents[2]
CRDS = REPOSITORY / "crds"
# Both define mpijobs.kubeflow.org; only one can be installed. dmlops builds v2beta1 (mpi-operator) by default.
DEFAULT_EXCLUDED_CRDS = ("training-operator-v1/kubeflow.org_mpijobs.yaml",)

# The kit's kube-apiserver (v1.36.2, linux/amd64), as published with it.
KIT_ARCHIVE = "kube-apiserver.xz"
KIT_ARCHIVE_SHA256 = "0f9ca12dd235cc57c185ee29dff220f9a0f763580818ad94e044b10830854a93"
KIT_BINARY_SHA256 = "76293c62863b5362db47bbc0d1ba4c9ffca3f186881317f71acdd6658b4a1b06"
REQUIRED_ASSETS = ("kube-apiserver", "etcd")  # kubectl too by the convention, used only by ApiServer.kubectl
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
START_TIMEOUT_S = 60.0


class EnvtestUnavailable(RuntimeError):
    """The binaries of a real API server are not on this machine; the message says how to get them."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace_symlink(target: str, link: Path) -> None:
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)


def unpack_kit(kit: Path, cache_root: Path | None = None) -> Path:
    """Unpack ``kit/kube-apiserver.xz`` once (checked by sha256) and link etcd and kubectl beside it."""
    archive = kit / KIT_ARCHIVE
    if not archive.is_file():
        raise EnvtestUnavailable(f"DMLOPS_ENVTEST_KIT={kit} has no {KIT_ARCHIVE}")
    assets = (cache_root or Path.home() / ".cache" / "dmlops" / "envtest") / KIT_ARCHIVE_SHA256
    apiserver = assets / "kube-apiserver"
    if not apiserver.is_file():
        found = _sha256(archive)
        if found != KIT_ARCHIVE_SHA256:
            raise EnvtestUnavailable(f"{archive} has sha256 {found}, expected {KIT_ARCHIVE_SHA256}")
        assets.mkdir(parents=True, exist_ok=True)
        partial = assets / f".kube-apiserver.{os.getpid()}"
        with lzma.open(archive) as packed, partial.open("wb") as unpacked:
            shutil.copyfileobj(packed, unpacked, 1 << 20)
        if _sha256(partial) != KIT_BINARY_SHA256:
            partial.unlink()
            raise EnvtestUnavailable(f"{archive} unpacked to a kube-apiserver with an unexpected sha256")
        partial.chmod(0o755)
        os.replace(partial, apiserver)  # atomic: concurrent sessions see all of it or nothing
    for name in ("etcd", "kubectl"):
        found = shutil.which(name)
        if found is None and name in REQUIRED_ASSETS:
            raise EnvtestUnavailable("etcd is not on PATH (apt-get install etcd-server; scripts/services.sh does it)")
        if found and (not (assets / name).exists() or os.path.realpath(assets / name) != os.path.realpath(found)):
            _replace_symlink(found, assets / name)
    return assets


def find_assets() -> Path:
    """The folder holding kube-apiserver, etcd and kubectl, from KUBEBUILDER_ASSETS or DMLOPS_ENVTEST_KIT."""
    named = os.environ.get("KUBEBUILDER_ASSETS")
    if named:
        assets = Path(named)
        missing = [name for name in REQUIRED_ASSETS if not os.access(assets / name, os.X_OK)]
        if missing:
            raise EnvtestUnavailable(f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}")
        return assets
    kit = os.environ.get("DMLOPS_ENVTEST_KIT")
    if kit:
        return unpack_kit(Path(kit))
    raise EnvtestUnavailable(
        "no real API server: set KUBEBUILDER_ASSETS to a folder with kube-apiserver, etcd and kubectl "
        "(setup-envtest use), or DMLOPS_ENVTEST_KIT to a folder with kube-apiserver.xz (with etcd from "
        "Debian's etcd-server on PATH)"
    )


def vendored_crds(excluded: tuple[str, ...] = DEFAULT_EXCLUDED_CRDS) -> list[Path]:
    """Every CRD file in the repository's crds/ (YAML files holding a CustomResourceDefinition)."""
    found = []
    for path in sorted(CRDS.rglob("*.yaml")):
        if path.relative_to(CRDS).as_posix() in excluded:
            continue
        if "kind: CustomResourceDefinition" in path.read_text():
            found.append(path)
    return found


def _crd_documents(paths: list[Path]) -> list[dict]:
    """Every CustomResourceDefinition document in the files (multi-document YAML included)."""
    return [
        document
        for path in paths
        for document in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader)
        if document and document.get("kind") == "CustomResourceDefinition"
    ]


def _served(paths: list[Path]) -> list[tuple[str, str]]:
    """(discovery path, plural) of every served version of the CRDs in the files."""
    return [
        (f"/apis/{document['spec']['group']}/{version['name']}", document["spec"]["names"]["plural"])
        for document in _crd_documents(paths)
        for version in document["spec"]["versions"]
        if version.get("served")
    ]


def crd_names(paths: list[Path]) -> list[str]:
    """The metadata.name of every CustomResourceDefinition in the files."""
    return [document["metadata"]["name"] for document in _crd_documents(paths)]


@dataclass
class ApiServer:
    """A running etcd + kube-apiserver; ``token`` is an admin (``system:masters``) bearer token."""

    url: str
    kubeconfig: Path
    token: str
    ca_file: Path
    workdir: Path
    assets: Path
    etcd_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    start_seconds: float = 0.0

    def api_client(self, token: str | None = None) -> client.ApiClient:
        """A Kubernetes API client authenticated with ``token`` (default: the admin's)."""
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": token or self.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        """Run kubectl against this server as the admin; raises with kubectl's stderr on failure."""
        result = subprocess.run(
            [str(self.assets / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def apply(self, body: dict, path: str, field_manager: str = "dmlops-tests") -> dict:
        """Server-side apply ``body`` at the API ``path`` (what ``kubectl apply --server-side`` sends)."""
        return self.api_client().call_api(
            path, "PATCH",
            query_params=[("fieldManager", field_manager), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"], response_type="object", _return_http_data_only=True,
        )

    def install_crds(self, paths: list[Path], timeout: float = 300) -> None:
        """Apply the CRDs in ``paths`` server-side and wait until each is Established.

        Client-side apply would fail on the large ones (its last-applied annotation is limited to 256 KB).
        """
        for document in _crd_documents(paths):
            self.apply(document, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{document['metadata']['name']}")
        self.wait_established(crd_names(paths), timeout)

    def wait_established(self, names: list[str], timeout: float = 300) -> None:
        """Wait until every named CRD has its Established condition (it may not exist at first)."""
        deadline = time.monotonic() + timeout
        extensions = client.ApiextensionsV1Api(self.api_client())
        pending = set(names)
        while pending:
            # raw JSON: the client's models take seconds to build for these large CRDs
            listing = json.loads(extensions.list_custom_resource_definition(_preload_content=False).data)
            for crd in listing["items"]:
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    pending.discard(crd["metadata"]["name"])
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRDs not Established within {timeout} s: {', '.join(sorted(pending))}")
            time.sleep(0.1)

    def wait_served(self, resources: list[tuple[str, str]], timeout: float = 60) -> None:
        """Wait until API discovery lists each (group-version path, plural), as it does for Established CRDs."""
        deadline = time.monotonic() + timeout
        api = self.api_client()
        for path in sorted({path for path, _ in resources}):
            wanted = {plural for found_path, plural in resources if found_path == path}
            while True:
                try:
                    listed = api.call_api(path, "GET", header_params={"Accept": "application/json"},
                                          auth_settings=["BearerToken"], response_type="object",
                                          _return_http_data_only=True)
                    if wanted <= {resource["name"] for resource in listed["resources"]}:
                        break
                except client.ApiException as error:
                    if error.status != 404:
                        raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{path} does not serve {', '.join(sorted(wanted))} after {timeout} s")
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, then SIGKILL after 10 s)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()


def _log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _wait_ready(url: str, process: subprocess.Popen, log: Path, deadline: float, **request: object) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{_log_tail(log)}")
        try:
            if requests.get(url, timeout=1, **request).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready within {START_TIMEOUT_S} s:\n{_log_tail(log)}")
        time.sleep(0.05)


def _write_kubeconfig(path: Path, url: str, ca_file: Path, token: str) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {"server": url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "admin", "namespace": "default"}}],
        "current-context": "envtest",
    }))


def _start_servers(workdir: Path, assets: Path) -> ApiServer:
    """etcd on ``workdir/etcd`` (fresh or a copied snapshot) and kube-apiserver, until /readyz answers."""
    started = time.monotonic()
    deadline = started + START_TIMEOUT_S
    workdir.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port = free_ports(3)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd_log = workdir / "etcd.log"
    processes: list[subprocess.Popen] = []
    server = ApiServer("", workdir, "", workdir, workdir, assets, etcd_url, processes)
    try:
        processes.append(subprocess.Popen(
            [
                str(assets / "etcd"), "--data-dir", str(workdir / "etcd"), "--name", "envtest",
                "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"envtest={peer_url}", "--unsafe-no-fsync",
            ],
            stdout=etcd_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        ))
        key, public_key = workdir / "service-account.key", workdir / "service-account.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(public_key)],
                       check=True, capture_output=True)
        token = secrets.token_hex(16)
        tokens = workdir / "tokens.csv"
        tokens.write_text(f'{token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)
        certs = workdir / "certs"
        apiserver_log = workdir / "kube-apiserver.log"
        _wait_ready(f"{etcd_url}/health", processes[0], etcd_log, deadline)
        processes.append(subprocess.Popen(
            [
                str(assets / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={certs}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-key-file={public_key}",
                f"--service-account-signing-key-file={key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
            ],
            stdout=apiserver_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        ))
        url = f"https://127.0.0.1:{api_port}"
        ca_file = certs / "apiserver.crt"
        while not ca_file.exists() and processes[1].poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        _wait_ready(f"{url}/readyz", processes[1], apiserver_log, deadline,
                    headers={"Authorization": f"Bearer {token}"}, verify=str(ca_file))
        kubeconfig = workdir / "kubeconfig"
        _write_kubeconfig(kubeconfig, url, ca_file, token)
    except BaseException:
        server.stop()
        raise
    return ApiServer(url, kubeconfig, token, ca_file, workdir, assets, etcd_url, processes)


def _snapshot_key(assets: Path, crds: list[Path]) -> str:
    """Names the etcd data of these binaries with these CRD files installed."""
    digest = hashlib.sha256()
    for name in ("kube-apiserver", "etcd"):
        binary = Path(os.path.realpath(assets / name))
        digest.update(f"{binary}:{binary.stat().st_size}:{binary.stat().st_mtime_ns}".encode())
    for path in crds:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:24]


def _crd_snapshot(assets: Path, crds: list[Path], scratch: Path, cache_root: Path) -> Path:
    """etcd data with ``crds`` installed server-side and Established, built once and kept in the cache.

    Installing the large CRDs costs the API server tens of CPU seconds; restarting on their data costs
    about as much as an empty start.
    """
    snapshot = cache_root / f"etcd-{_snapshot_key(assets, crds)}"
    if snapshot.is_dir():
        return snapshot
    builder = _start_servers(scratch, assets)
    try:
        builder.install_crds(crds)
    finally:
        builder.stop()
    cache_root.mkdir(parents=True, exist_ok=True)
    partial = cache_root / f".{snapshot.name}.{os.getpid()}"
    shutil.copytree(scratch / "etcd", partial / "etcd")
    (partial / "resources.txt").write_text("".join(f"{path} {plural}\n" for path, plural in _served(crds)))
    try:
        os.replace(partial, snapshot)
    except OSError:  # another session stored the same snapshot first
        shutil.rmtree(partial)
    shutil.rmtree(scratch)
    return snapshot


def start_envtest(
    workdir: Path, crds: list[Path] | None = None, assets: Path | None = None, cache_root: Path | None = None
) -> ApiServer:
    """Start etcd and kube-apiserver under ``workdir`` with ``crds`` installed (default: every vendored CRD).

    The etcd data holding the installed CRDs is cached (``cache_root``, default ``~/.cache/dmlops/envtest``)
    per binaries and CRD files, so later sessions start on a copy of it. Raises
    :class:`EnvtestUnavailable` when the binaries are not found.
    """
    started = time.monotonic()
    assets = assets or find_assets()
    crds = vendored_crds() if crds is None else crds
    cache_root = cache_root or Path.home() / ".cache" / "dmlops" / "envtest"
    snapshot = _crd_snapshot(assets, crds, workdir / "snapshot-build", cache_root)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(snapshot / "etcd", workdir / "etcd")
    server = _start_servers(workdir, assets)
    try:
        server.wait_served([tuple(line.split()) for line in (snapshot / "resources.txt").read_text().splitlines()])
    except BaseException:
        server.stop()
        raise
    server.start_seconds = time.monotonic() - started
    return server
