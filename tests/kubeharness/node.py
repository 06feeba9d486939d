"""A real single-node Kubernetes for end-to-end tests: the kube-node kit named by ``DMLOPS_KUBE_NODE_KIT``.

The kit (its README says how it was built) runs etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubelet and kube-proxy of Kubernetes v1.36.2 with a private containerd and Debian's CNI
plugins: pods really run (runc), from images copied out of the local Docker engine (``load-image.sh``;
pods use them with ``imagePullPolicy: Never``). There is no DNS on the node: pods reach Services by
ClusterIP and this machine by the node IP, and the fixture adds cluster DNS
(:mod:`kubeharness.cluster_dns`: Service names resolve in pods as with CoreDNS).

:func:`start_node` runs the kit's ``setup.sh`` and ``up.sh`` on a fresh folder, installs the repository's
vendored CRDs server-side (waiting until Established, with :class:`kubeharness.envtest.ApiServer`'s
installer) and returns a :class:`KubeNode`; :meth:`KubeNode.stop` runs ``down.sh`` and removes the folder.
Only one kit instance runs on a host at a time (they would share the CNI bridge, the pod range and
kube-proxy's iptables chains): a lock file guards it.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from kubeharness.cluster_dns import ClusterDns, start_cluster_dns
from kubeharness.envtest import ApiServer, vendored_crds

KIT_SCRIPTS = ("setup.sh", "up.sh", "load-image.sh", "down.sh")
LOCK_FILE = Path("/run/lock/dmlops-kube-node.lock")
ADMIN_ACCOUNT = "dmlops-tests-admin"  # a cluster-admin ServiceAccount: ApiServer's clients use bearer tokens
SETTINGS_FILE = "kn.env"


class KubeNodeUnavailable(RuntimeError):
    """The node cannot run here; the message says what is missing."""


def _run(command: list[str], log: Path, timeout: float) -> float:
    """Run one kit script, appending its output to ``log``; its wall time in seconds."""
    started = time.monotonic()
    with log.open("ab") as sink:
        result = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}:\n{tail}")
    return time.monotonic() - started


def find_kit() -> Path:
    """The kit folder named by ``DMLOPS_KUBE_NODE_KIT``; raises :class:`KubeNodeUnavailable` saying why not."""
    named = os.environ.get("DMLOPS_KUBE_NODE_KIT")
    if not named:
        raise KubeNodeUnavailable("DMLOPS_KUBE_NODE_KIT is not set (a folder with the kube-node kit's "
                                  "setup.sh, up.sh, load-image.sh and down.sh)")
    kit = Path(named)
    missing = [name for name in KIT_SCRIPTS if not (kit / name).is_file()]
    if missing:
        raise KubeNodeUnavailable(f"DMLOPS_KUBE_NODE_KIT={kit} lacks {', '.join(missing)}")
    if os.geteuid() != 0:
        raise KubeNodeUnavailable("the kube-node kit needs root (containerd, kubelet and iptables)")
    return kit


def read_settings(root: Path) -> dict[str, str]:
    """The settings ``setup.sh`` recorded in ``root/kn.env`` (node IP, ports, CIDRs)."""
    settings = {}
    for line in (root / SETTINGS_FILE).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


@dataclass
class KubeNode:
    """A running single-node cluster: ``api`` is its API server (admin token, kubectl, CRD installer)."""

    kit: Path
    root: Path
    api: ApiServer
    node_ip: str
    service_cidr: str
    timings: dict[str, float] = field(default_factory=dict)
    dns: ClusterDns | None = field(default=None, repr=False)
    lock: IO[str] | None = field(default=None, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.api.kubeconfig

    def api_client(self, token: str | None = None):
        """A Kubernetes API client (the admin's, or authenticated with ``token``)."""
        return self.api.api_client(token)

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        return self.api.kubectl(*args, input=input, timeout=timeout)

    def load_images(self, *images: str) -> dict[str, float]:
        """Copy Docker images into the node's containerd (``load-image.sh``); seconds per image."""
        seconds = {}
        for image in images:
            seconds[image] = _run([str(self.kit / "load-image.sh"), str(self.root), image],
                                  self.root / "harness.log", timeout=1800)
            self.timings[f"load {image}"] = seconds[image]
        return seconds

    def stop(self) -> None:
        """``down.sh`` (pods, processes, iptables chains, bridge, mounts), then remove the folder."""
        try:
            _run([str(self.kit / "down.sh"), str(self.root)], self.root / "harness.log", timeout=300)
        finally:
            if self.dns is not None:
                self.dns.stop()
            _remove_root(self.root)
            if self.lock is not None:
                self.lock.close()


def _remove_root(root: Path) -> None:
    """Delete the kit's folder, never crossing into a file system still mounted below it."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True, timeout=900)


def cluster_dns_ip(service_cidr: str) -> str:
    """The tenth address of the Service range: kubelet's ``clusterDNS`` in the kit (and kubeadm's default)."""
    return str(ipaddress.ip_network(service_cidr)[10])


def _take_host_lock() -> IO[str]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    lock = LOCK_FILE.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise KubeNodeUnavailable(f"another kube-node instance runs on this host (lock {LOCK_FILE})") from None
    return lock


def _port_in_use(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _admin_token(api: ApiServer) -> str:
    """A token of a cluster-admin ServiceAccount, created with the kit's client-certificate admin."""
    api.kubectl("create", "serviceaccount", ADMIN_ACCOUNT, "-n", "kube-system")
    api.kubectl("create", "clusterrolebinding", ADMIN_ACCOUNT, "--clusterrole=cluster-admin",
                f"--serviceaccount=kube-system:{ADMIN_ACCOUNT}")
    return api.kubectl("create", "token", ADMIN_ACCOUNT, "-n", "kube-system", "--duration=24h").strip()


def start_node(kit: Path, crds: list[Path] | None = None) -> KubeNode:
    """Set up and start the kit in a fresh folder under /tmp and install ``crds`` (default: every vendored CRD)."""
    lock = _take_host_lock()
    root = None
    try:
        settings_port = int(os.environ.get("KN_APISERVER_PORT", "36443"))
        if _port_in_use(settings_port):
            raise KubeNodeUnavailable(f"port {settings_port} is in use: another Kubernetes API server (a kube-node "
                                      "started by hand?) runs on this host")
        # The containerd socket lives under ROOT: its path must stay under the unix socket limit.
        root = Path(tempfile.mkdtemp(prefix="kn-", dir="/tmp"))
        log = root / "harness.log"
        try:
            timings = {"setup": _run([str(kit / "setup.sh"), str(root)], log, timeout=900)}
            timings["up"] = _run([str(kit / "up.sh"), str(root)], log, timeout=300)
        except RuntimeError as error:  # the machine cannot run the kit (packages, kernel, privileges)
            raise KubeNodeUnavailable(f"the kit did not start on this machine: {error}") from error
        settings = read_settings(root)
        kubeconfig = root / "admin.kubeconfig"
        url = f"https://127.0.0.1:{settings['KN_APISERVER_PORT']}"
        api = ApiServer(url=url, kubeconfig=kubeconfig, token="", ca_file=root / "pki" / "ca.crt", workdir=root,
                        assets=root / "bin", etcd_url=f"http://127.0.0.1:{settings['KN_ETCD_PORT']}")
        api.token = _admin_token(api)
        started = time.monotonic()
        api.install_crds(vendored_crds() if crds is None else crds)
        timings["crds"] = time.monotonic() - started
        node = KubeNode(kit, root, api, settings["KN_NODE_IP"], settings["KN_SERVICE_CIDR"], timings, lock=lock)
        node.dns = start_cluster_dns(api.api_client(), node.node_ip, cluster_dns_ip(node.service_cidr))
        return node
    except BaseException:
        if root is not None:
            subprocess.run([str(kit / "down.sh"), str(root)], capture_output=True, timeout=300)
            _remove_root(root)
        lock.close()
        raise


def docker_images_missing(images: list[str]) -> list[str]:
    """Those of ``images`` the local Docker engine does not have (all of them when no engine answers)."""
    docker = shutil.which("docker")
    if docker is None:
        return list(images)
    return [image for image in images
            if subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode != 0]


@pytest.fixture(scope="session")
def kube_node() -> Iterator[KubeNode]:
    """A real single-node cluster with the vendored CRDs; skips naming what is missing."""
    try:
        kit = find_kit()
        node = start_node(kit)
    except KubeNodeUnavailable as missing:
        pytest.skip(f"real Kubernetes node unavailable: {missing}")
    print(f"\nkube-node: setup {node.timings['setup']:.1f} s, up {node.timings['up']:.1f} s, "
          f"CRDs {node.timings['crds']:.1f} s; node IP {node.node_ip}, API {node.api.url}")
    yield node
    node.stop()
