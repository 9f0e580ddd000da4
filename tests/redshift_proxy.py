"""A loopback proxy that lets redshift_connector (and so dbt-redshift) talk to a plain PostgreSQL server.

redshift_connector sends Redshift-only startup parameters that PostgreSQL refuses (`client_protocol_version`,
`driver_version`, `os_version`, `driver_discovery_version`, `plugin_name`, `idp_type`) and can't parse
Debian's `server_version` ("15.8 (Debian 15.8-1.pgdg120+1)"). The proxy rewrites the client's
StartupMessage without them and the server's ParameterStatus `server_version` to its bare number, and
two Redshift-only SQL forms in Query/Parse messages (`rewrite_sql`); everything else passes through. SSL/GSS requests are answered "no" (loopback only).

One Redshift refusal PostgreSQL lacks is emulated, so the harness fails where Redshift would:
`ALTER TABLE … ALTER COLUMN … TYPE` only to a varchar (or varbyte) length, and never inside a transaction
block (the proxy follows each connection's transaction status in the server's ReadyForQuery messages).
The refused statement is replaced by a call of the harness's `redshift_refuses(text)`, which raises.

Test harness only: `with RedshiftProxy("127.0.0.1", 5432) as proxy: … port=proxy.port …`.
"""

from __future__ import annotations

import asyncio
import re
import struct
import threading
from typing import Any

REDSHIFT_ONLY = {
    b"client_protocol_version",
    b"driver_version",
    b"os_version",
    b"driver_discovery_version",
    b"plugin_name",
    b"idp_type",
}
SSL_REQUEST, GSS_REQUEST = 80877103, 80877104
PROTOCOL_3 = 196608


def rewrite_startup(body: bytes) -> bytes:
    """A StartupMessage body (protocol + key/value pairs) without the Redshift-only parameters."""
    (protocol,) = struct.unpack("!i", body[:4])
    if protocol != PROTOCOL_3:
        return body
    parts = body[4:].split(b"\0")
    pairs = [(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2) if parts[i]]
    kept = b"".join(k + b"\0" + v + b"\0" for k, v in pairs if k not in REDSHIFT_ONLY)
    return body[:4] + kept + b"\0"


def rewrite_parameter_status(payload: bytes) -> bytes:
    """A ParameterStatus payload with `server_version` trimmed to its version number ("15.8")."""
    name, _, rest = payload.partition(b"\0")
    if name != b"server_version":
        return payload
    value = rest.rstrip(b"\0")
    m = re.match(rb"\d+(\.\d+)*", value)
    return name + b"\0" + (m.group(0) if m else value) + b"\0"


# Redshift's dateadd takes a bare date part (`dateadd(hour, -3, ts)`), which PostgreSQL would read as a
# column: quoted here, it reaches the `dateadd(text, bigint, timestamp…)` shim the harness creates.
_DATEADD = re.compile(rb"\bdateadd\(\s*([a-z]+)\s*,", re.IGNORECASE)


# Late-binding views (dbt-redshift's `bind: false`): PostgreSQL has no such clause; its views stay bound.
_NO_BINDING = re.compile(rb"\bwith\s+no\s+schema\s+binding\b", re.IGNORECASE)


# Redshift's ALTER COLUMN TYPE: "only supported for VARCHAR and VARBYTE" (a length change), and
# "ALTER TABLE ALTER COLUMN cannot run inside a transaction block". PostgreSQL does both, so without this
# a widening that only works on PostgreSQL would pass the harness.
_ALTER_TYPE = re.compile(
    rb"\balter\s+table\s+[^;]+?\s+alter\s+column\s+[^;]+?\s+type\s+(\w+(?:\s+varying)?)", re.IGNORECASE
)
_IN_PLACE_TYPES = {b"varchar", b"character varying", b"varbyte"}


def redshift_refusal(sql: bytes, in_transaction: bool) -> str | None:
    """The error Redshift would raise for `sql` where PostgreSQL runs it; None when Redshift runs it too."""
    m = _ALTER_TYPE.search(sql)
    if m is None:
        return None
    if re.sub(rb"\s+", b" ", m.group(1).lower()) not in _IN_PLACE_TYPES:
        return "ALTER COLUMN TYPE is only supported for VARCHAR and VARBYTE columns (Redshift, emulated)"
    if in_transaction:
        return "ALTER TABLE ALTER COLUMN cannot run inside a transaction block (Redshift, emulated)"
    return None


def rewrite_sql(sql: bytes, in_transaction: bool = False) -> bytes:
    """Redshift-only SQL made PostgreSQL's: bare dateadd parts quoted, `with no schema binding` dropped;
    a statement Redshift refuses (`redshift_refusal`) becomes a call that raises its error."""
    refused = redshift_refusal(sql, in_transaction)
    if refused is not None:
        return f"select public.redshift_refuses('{refused}')".encode()
    return _NO_BINDING.sub(b"", _DATEADD.sub(rb"dateadd('\1',", sql))


def rewrite_query(payload: bytes, kind: bytes, in_transaction: bool = False) -> bytes:
    """A Query ('Q') or Parse ('P') payload with its SQL rewritten by `rewrite_sql`."""
    if kind == b"Q":
        body = payload.rstrip(b"\0")
        return rewrite_sql(body, in_transaction) + b"\0"
    name, _, rest = payload.partition(b"\0")
    query, _, tail = rest.partition(b"\0")
    return name + b"\0" + rewrite_sql(query, in_transaction) + b"\0" + tail


async def _read_exact(reader: asyncio.StreamReader, n: int) -> bytes:
    return await reader.readexactly(n)


class RedshiftProxy:
    """Listens on 127.0.0.1:<free port> and forwards each connection to the PostgreSQL server, rewritten."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="redshift-proxy")
        self._server: Any = None

    def __enter__(self) -> RedshiftProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        swriter = None
        try:
            # Startup phase: SSL/GSS requests are declined here, the StartupMessage is rewritten.
            while True:
                (length,) = struct.unpack("!i", await _read_exact(creader, 4))
                body = await _read_exact(creader, length - 4)
                (code,) = struct.unpack("!i", body[:4])
                if length == 8 and code in (SSL_REQUEST, GSS_REQUEST):
                    cwriter.write(b"N")
                    await cwriter.drain()
                    continue
                break
            sreader, swriter = await asyncio.open_connection(*self.upstream)
            body = rewrite_startup(body)
            swriter.write(struct.pack("!i", len(body) + 4) + body)
            await swriter.drain()
            # The connection's transaction status, from the server's last ReadyForQuery ('I' idle).
            status = [b"I"]
            await asyncio.gather(
                self._client_to_server(creader, swriter, status),
                self._server_to_client(sreader, cwriter, status),
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (cwriter, swriter):
                if w is not None:
                    w.close()

    @staticmethod
    async def _client_to_server(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: list[bytes]
    ) -> None:
        """Message by message, so SQL in Query and Parse messages can be rewritten."""
        try:
            while True:
                head = await reader.readexactly(5)
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                payload = await reader.readexactly(length - 4)
                if kind in (b"Q", b"P"):
                    payload = rewrite_query(payload, kind, status[0] != b"I")
                    head = kind + struct.pack("!i", len(payload) + 4)
                writer.write(head + payload)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    @staticmethod
    async def _server_to_client(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: list[bytes]
    ) -> None:
        """Message by message (type byte, int32 length), so ParameterStatus can be rewritten anywhere."""
        try:
            while True:
                head = await reader.readexactly(5)
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                payload = await reader.readexactly(length - 4)
                if kind == b"S":
                    payload = rewrite_parameter_status(payload)
                    head = kind + struct.pack("!i", len(payload) + 4)
                elif kind == b"Z":
                    status[0] = payload[:1]
                writer.write(head + payload)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
