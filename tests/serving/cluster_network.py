"""The network as a pod inside the cluster sees it, for the rollout tests: Service host names
(``<service>.<namespace>.svc.cluster.local``) resolve, the external domain of Knative routes does not.

:class:`ClusterNetwork` is an HTTP proxy on 127.0.0.1 that the tests set as ``http_proxy``, so every
request the code under test sends by host name goes through it, as through cluster DNS and kube-proxy:
a host registered with :meth:`ClusterNetwork.route` is forwarded to the local server standing for that
Service; any other host answers 502, as a name that does not resolve fails the request. KServe's
default ingress domain is ``example.com`` (kserve ``config/configmap/inferenceservice.yaml``,
``ingressDomain``), which resolves nowhere unless an administrator set up DNS for it.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


class ClusterNetwork:
    """Routes requests by host name to local servers; unknown hosts get 502 (see the module docstring)."""

    def __init__(self) -> None:
        self.routes: dict[str, str] = {}
        self.refused: list[str] = []
        self.authorizations: list[str] = []  # the Authorization header of each forwarded request ("" if none)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ClusterNetwork:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route(self, host: str, target_url: str) -> None:
        """Send requests for ``host`` to the server at ``target_url`` (``http://127.0.0.1:<port>``)."""
        with self._lock:
            self.routes[host] = target_url

    def target(self, host: str) -> str | None:
        with self._lock:
            return self.routes.get(host)


def _handler(network: ClusterNetwork) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            url = urlsplit(self.path)  # a proxy receives the absolute URL
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            target = network.target(url.hostname or "")
            if target is None:
                network.refused.append(url.hostname or "")
                message = f"could not resolve host {url.hostname}".encode()
                self.send_response(502)
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            network.authorizations.append(self.headers.get("Authorization", ""))
            upstream = urlsplit(target)
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
            headers = {key: value for key, value in self.headers.items() if key.lower() not in _HOP_BY_HOP}
            path = url.path + (f"?{url.query}" if url.query else "")
            try:
                connection.request(self.command, path, body=body, headers=headers)
                response = connection.getresponse()
                status, response_headers, payload = response.status, response.getheaders(), response.read()
            except OSError as error:  # nothing listens behind the Service
                status, response_headers, payload = 503, [], f"upstream {target}: {error}".encode()
            finally:
                connection.close()
            self.send_response(status)
            for key, value in response_headers:
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _forward

    return Handler
