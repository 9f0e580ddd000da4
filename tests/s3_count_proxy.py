"""A counting HTTP proxy in front of moto's S3 server: every request any S3 client makes (boto3, pyarrow)
is forwarded unchanged and recorded, so tests can count the LIST calls a run makes and see their prefixes."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


class CountingProxy:
    """Forward to `upstream` (`http://127.0.0.1:<port>`); `requests` holds (method, bucket/key path, query)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _forward(self) -> None:
                url = urlsplit(self.path)
                proxy.requests.append((self.command, unquote(url.path), parse_qs(url.query)))
                body: bytes | None
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    body = b"".join(parts)
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                drop = ("connection", "transfer-encoding", "expect", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # A HEAD answer has no body but says how long the object is.
                head_length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", head_length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def lists(self) -> list[tuple[str, str]]:
        """(bucket path, prefix) of every ListObjects(V2) request, in order."""
        out = []
        for method, path, query in self.requests:
            if method == "GET" and path.strip("/") and "/" not in path.strip("/") and "location" not in query:
                out.append((path.strip("/"), query.get("prefix", [""])[0]))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
