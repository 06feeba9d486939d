"""Cluster DNS for the real node: the records CoreDNS's ``kubernetes`` plugin serves, answered from the API.

The node has no CoreDNS image, but kubelet already gives every pod ``nameserver 10.96.0.10`` (the kit's
``clusterDNS``) and the search path ``<namespace>.svc.cluster.local svc.cluster.local cluster.local``.
:func:`start_cluster_dns` makes that address answer: a selector-less Service ``kube-dns`` in
``kube-system`` on that ClusterIP (as kubeadm's CoreDNS add-on names it), whose EndpointSlice points at
this small UDP server on the node IP; kube-proxy forwards the pods' queries to it.

Records (the Kubernetes DNS specification, kubernetes/dns ``docs/specification.md``, as CoreDNS
``plugin/kubernetes`` serves them):

- ``<service>.<namespace>.svc.cluster.local``: the ClusterIP; for a headless Service, the addresses of
  its ready endpoints (specification 2.3.1, 2.4.1);
- ``<hostname>.<subdomain>.<namespace>.svc.cluster.local``: a pod with ``spec.hostname`` and
  ``spec.subdomain`` when a headless Service named after the subdomain exists (2.4.1, the pod's A record
  through the Service's endpoints; how training operators name their workers);
- anything else in ``cluster.local``: NXDOMAIN; other zones: NXDOMAIN too (the node is offline and
  CoreDNS's ``forward`` has nowhere to go). A name that exists but has no record of the asked type (AAAA)
  gets an empty NOERROR answer, so resolvers move on at once.
"""

from __future__ import annotations

import ipaddress
import socketserver
import struct
import threading
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException

CLUSTER_DOMAIN = "cluster.local"
TTL = 5
TYPE_A, CLASS_IN = 1, 1
NOERROR, FORMERR, NXDOMAIN = 0, 1, 3
MANAGED_BY = "dmlops-tests"


def _question(packet: bytes) -> tuple[str, int, int, int]:
    """The first question's name, type and class, and where the question ends."""
    labels, offset = [], 12
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length
    qtype, qclass = struct.unpack("!HH", packet[offset:offset + 4])
    return ".".join(labels).lower(), qtype, qclass, offset + 4


def answer(packet: bytes, lookup) -> bytes:
    """The response to a DNS query ``packet``; ``lookup(name)`` gives the name's IPv4 addresses, or None
    when the name does not exist."""
    ident, flags, questions = struct.unpack("!HHH", packet[:6])
    recursion_desired = flags & 0x0100
    if questions != 1:
        return struct.pack("!HHHHHH", ident, 0x8000 | recursion_desired | FORMERR, 0, 0, 0, 0)
    name, qtype, qclass, end = _question(packet)
    addresses = lookup(name)
    code = NXDOMAIN if addresses is None else NOERROR
    records = [address for address in addresses or [] if qtype == TYPE_A and qclass == CLASS_IN]
    header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | recursion_desired | code, 1, len(records), 0, 0)
    body = packet[12:end]
    for address in records:
        body += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + ipaddress.IPv4Address(address).packed
    return header + body


class ClusterRecords:
    """Looks names up in the API server, as CoreDNS's kubernetes plugin reads its Services and endpoints."""

    def __init__(self, api: client.ApiClient):
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)

    def lookup(self, name: str) -> list[str] | None:
        suffix = f".svc.{CLUSTER_DOMAIN}"
        if not name.endswith(suffix):
            return None
        parts = name[:-len(suffix)].split(".")
        try:
            if len(parts) == 2:
                return self._service(parts[1], parts[0])
            if len(parts) == 3:
                return self._pod(parts[2], parts[1], parts[0])
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return None

    def _ready_addresses(self, namespace: str, service: str) -> list[tuple[str, str | None]]:
        slices = self.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}").items
        return [(address, endpoint.hostname) for piece in slices for endpoint in piece.endpoints or []
                if endpoint.conditions is None or endpoint.conditions.ready is not False
                for address in endpoint.addresses]

    def _service(self, namespace: str, name: str) -> list[str] | None:
        service = self.core.read_namespaced_service(name, namespace)
        if service.spec.cluster_ip and service.spec.cluster_ip != "None":
            return [service.spec.cluster_ip]
        return [address for address, _ in self._ready_addresses(namespace, name)]

    def _pod(self, namespace: str, subdomain: str, hostname: str) -> list[str] | None:
        service = self.core.read_namespaced_service(subdomain, namespace)
        if service.spec.cluster_ip not in (None, "None"):
            return None
        pods = self.core.list_namespaced_pod(namespace).items
        found = [pod.status.pod_ip for pod in pods
                 if pod.spec.hostname == hostname and pod.spec.subdomain == subdomain and pod.status.pod_ip]
        return found or None


@dataclass
class ClusterDns:
    server: socketserver.ThreadingUDPServer
    thread: threading.Thread
    address: tuple[str, int]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_cluster_dns(api: client.ApiClient, node_ip: str, service_ip: str) -> ClusterDns:
    """Serve cluster DNS on ``node_ip`` (a free UDP port) behind the Service ``kube-system/kube-dns`` at
    ``service_ip`` (kubelet's ``clusterDNS``)."""
    records = ClusterRecords(api)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            packet, sock = self.request
            try:
                response = answer(packet, records.lookup)
            except Exception:  # a malformed packet or an API error: SERVFAIL, as CoreDNS answers
                response = packet[:2] + struct.pack("!H", 0x8002) + b"\0" * 8
            sock.sendto(response, self.client_address)

    server = socketserver.ThreadingUDPServer((node_ip, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    port = server.server_address[1]
    expose_host_port(api, "kube-system", "kube-dns", node_ip, port, 53, protocol="UDP", cluster_ip=service_ip,
                     port_name="dns")
    return ClusterDns(server, thread, (node_ip, port))


def expose_host_port(api: client.ApiClient, namespace: str, name: str, host_ip: str, host_port: int,
                     service_port: int, *, protocol: str = "TCP", cluster_ip: str | None = None,
                     port_name: str = "main") -> str:
    """A selector-less Service ``namespace/name`` whose endpoint is ``host_ip:host_port`` on this machine
    (how a cluster reaches a server outside it); returns its ClusterIP."""
    core = client.CoreV1Api(api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    except ApiException as error:
        if error.status != 409:
            raise
    service = core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(cluster_ip=cluster_ip, ports=[client.V1ServicePort(
            name=port_name, port=service_port, target_port=host_port, protocol=protocol)])))
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(namespace, client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(name=f"{name}-host", labels={
            "kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY}),
        address_type="IPv4",
        endpoints=[client.V1Endpoint(addresses=[host_ip], conditions=client.V1EndpointConditions(ready=True))],
        ports=[client.DiscoveryV1EndpointPort(name=port_name, port=host_port, protocol=protocol)]))
    return service.spec.cluster_ip
