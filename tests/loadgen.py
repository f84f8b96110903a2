"""A light HTTP/1.1 keep-alive client on raw trio sockets, so the load generator costs little CPU."""

from __future__ import annotations

import json

import trio


class RawClient:
    """One keep-alive connection (renewed when the server closes it); `request` returns (status, body)."""

    def __init__(self, stream: trio.SocketStream, host: str, port: int):
        self.stream, self.host, self.port, self.buf = stream, host, port, b""
        self.closing = False

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream(host, port), host, port)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        await self.send(method, path, body)
        return await self.read_response()

    async def send(self, method: str, path: str, body: bytes | None = None, *, split: bool = False) -> None:
        """Send one request; `split` sends the body in a separate write, after a checkpoint."""
        if self.closing:  # the server announced `Connection: close` (hypercorn does every 1000 requests)
            await self.stream.aclose()
            self.stream, self.buf, self.closing = await trio.open_tcp_stream(self.host, self.port), b"", False
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head_bytes = head.encode() + b"\r\n"
        if split and body:
            await self.stream.send_all(head_bytes)
            await trio.sleep(0)
            await self.stream.send_all(body)
        else:
            await self.stream.send_all(head_bytes + (body or b""))

    async def read_response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(fields["content-length"])
        self.closing = fields.get("connection", "").lower() == "close"
        while len(self.buf) < length:
            await self._fill()
        payload, self.buf = self.buf[:length], self.buf[length:]
        return status, payload

    async def json(self, method: str, path: str, doc: dict | None = None) -> tuple[int, dict]:
        status, payload = await self.request(method, path, None if doc is None else json.dumps(doc).encode())
        return status, json.loads(payload)

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
