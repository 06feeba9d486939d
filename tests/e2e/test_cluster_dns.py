"""The node's cluster DNS answers as CoreDNS does: A records for what exists, NXDOMAIN for what does not,
an empty answer for another record type of a name that exists."""

import socket
import struct

from kubeharness.cluster_dns import NOERROR, NXDOMAIN, answer

TYPE_A, TYPE_AAAA = 1, 28
RECORDS = {"minio-service.kubeflow.svc.cluster.local": ["10.96.0.42"],
           "workers.t.svc.cluster.local": ["10.244.0.7", "10.244.0.8"]}


def query(name: str, qtype: int = TYPE_A, ident: int = 4242) -> bytes:
    labels = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def parse(response: bytes) -> tuple[int, int, list[str]]:
    ident, flags, _, answers = struct.unpack("!HHHH", response[:8])
    addresses = [socket.inet_ntoa(response[len(response) - 16 * (answers - index) + 12:
                                           len(response) - 16 * (answers - index) + 16])
                 for index in range(answers)]
    return ident, flags & 0xF, addresses


def test_a_records_of_existing_names():
    assert parse(answer(query("minio-service.kubeflow.svc.cluster.local"), RECORDS.get)) == (
        4242, NOERROR, ["10.96.0.42"])
    assert parse(answer(query("Workers.T.svc.cluster.local"), RECORDS.get))[2] == ["10.244.0.7", "10.244.0.8"]


def test_missing_names_are_nxdomain_and_other_types_empty():
    # a search-path candidate that does not exist must fail at once, so the resolver tries the next one
    assert parse(answer(query("minio-service.kubeflow.t.svc.cluster.local"), RECORDS.get))[1:] == (NXDOMAIN, [])
    assert parse(answer(query("minio-service.kubeflow.svc.cluster.local", TYPE_AAAA), RECORDS.get))[1:] == (
        NOERROR, [])
