"""The forwarding client (proxy/upstream.py): response parsing at every split, keep-alive, failures."""

import asyncio
import json
from itertools import pairwise

import pytest
from conftest import backend_entry

from ollamaproxy.proxy.upstream import Connection, Pool, UpstreamError

LINES = [b'{"response":"a","done":false}\n', b'{"response":"bc","done":false}\n', b'{"done":true}\n']


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) if i == 1 else b"%x\r\n%s\r\n" % (len(p), p)
                    for i, p in enumerate(parts)) + b"0\r\n" + trailer + b"\r\n"


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
PLAIN_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def dechunk(framed: bytes) -> tuple[bytes, list[bytes]]:
    """A strict reference decoder for what the client received (no terminal chunk expected)."""
    body, chunks, pos = b"", [], 0
    while pos < len(framed):
        eol = framed.index(b"\r\n", pos)
        size = int(framed[pos:eol].split(b";")[0], 16)
        assert size > 0, "the terminal chunk is the relay's to write"
        data = framed[eol + 2:eol + 2 + size]
        assert len(data) == size and framed[eol + 2 + size:eol + 4 + size] == b"\r\n"
        body += data
        chunks.append(data)
        pos = eol + 4 + size
    return body, chunks


class FakeTransport:
    def __init__(self):
        self.written = []
        self.closing = False
        self.paused = False

    def write(self, data):
        self.written.append(bytes(data))

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


def is_stream(status, content_type):
    return content_type.startswith(("application/x-ndjson", "text/event-stream"))


def connection() -> tuple[Connection, FakeTransport]:
    loop = asyncio.get_running_loop()
    conn = Connection(Pool("http://127.0.0.1:1"), loop)
    upstream_side = FakeTransport()
    conn.connection_made(upstream_side)
    return conn, upstream_side


def feed(conn: Connection, raw: bytes, cuts: list[int]) -> None:
    edges = [0, *cuts, len(raw)]
    for a, b in pairwise(edges):
        if b > a:
            conn.data_received(raw[a:b])


def split_points(n: int):
    yield []
    for i in range(1, n):
        yield [i]
    yield list(range(1, n))  # one byte at a time


async def test_stream_split_at_every_byte_reaches_the_client_whole_and_well_framed():
    raw = STREAM_HEAD + chunked(*LINES, trailer=b"X-Checksum: 1\r\n")
    for cuts in split_points(len(raw)):
        conn, _ = connection()
        ready = conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
        client = FakeTransport()
        head_end = len(STREAM_HEAD)
        feed(conn, raw[:head_end], [c for c in cuts if c < head_end])
        assert ready.done() and conn.streaming and conn.status == 200
        done = conn.relay_to(client, True, b"\n", None)
        feed(conn, raw[head_end:], [c - head_end for c in cuts if c > head_end])
        assert done.done() and done.exception() is None, cuts
        body, chunks = dechunk(b"".join(client.written))
        assert body == b"".join(LINES), cuts
        assert conn.events == 3 and conn.payload_bytes == len(body) and conn.keep_alive
        if not cuts:
            assert chunks == LINES  # one read: the backend's framing passed through unchanged
            assert client.written == [raw[head_end:raw.index(b"0\r\nX-Checksum")]]


async def test_stream_bytes_before_relay_to_are_kept():
    conn, _ = connection()
    conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
    conn.data_received(STREAM_HEAD + chunked(LINES[0])[:-5])  # head, first chunk, not the end
    client = FakeTransport()
    done = conn.relay_to(client, True, b"\n", None)
    assert dechunk(b"".join(client.written))[0] == LINES[0] and not done.done()
    conn.data_received(b"0\r\n\r\n")
    assert done.done() and done.exception() is None


async def test_unframed_client_gets_the_payload_only():
    conn, _ = connection()
    conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
    conn.data_received(STREAM_HEAD)
    client = FakeTransport()
    done = conn.relay_to(client, False, b"\n", None)  # an HTTP/1.0 client: no chunked framing
    conn.data_received(chunked(*LINES))
    assert b"".join(client.written) == b"".join(LINES) and done.done()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_plain_body_split_at_every_byte(framing):
    payload = b'{"model":"m","response":"hi","done":true,"eval_count":2}'
    if framing == "length":
        raw = PLAIN_HEAD + b"Content-Length: %d\r\n\r\n" % len(payload) + payload
    elif framing == "chunked":
        raw = PLAIN_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(payload[:10], payload[10:])
    else:
        raw = PLAIN_HEAD.replace(b"1.1", b"1.0") + b"\r\n" + payload
    for cuts in split_points(len(raw)):
        conn, _ = connection()
        ready = conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
        feed(conn, raw, cuts)
        if framing == "close":
            assert not ready.done()
            conn.connection_lost(None)
        assert ready.done() and ready.result() is conn, cuts
        assert conn.body == payload and not conn.streaming
        assert conn.keep_alive is (framing != "close")


async def test_interim_response_and_header_details():
    conn, _ = connection()
    ready = conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                       b"X-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nno")
    assert ready.done() and conn.status == 503 and conn.get("retry-after") == "7" and conn.body == b"no"
    assert conn.get("X-Folded") == "a b"


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n-1\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
    b"SSH-2.0-OpenSSH\r\n\r\n",
])
async def test_malformed_answers_fail_the_exchange_and_close(raw):
    conn, upstream_side = connection()
    ready = conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
    conn.data_received(raw)
    assert ready.done() and isinstance(ready.exception(), UpstreamError)
    assert upstream_side.closing and not conn.keep_alive


async def test_mid_stream_loss_fails_the_relay_on_a_chunk_boundary():
    conn, _ = connection()
    conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
    conn.data_received(STREAM_HEAD)
    client = FakeTransport()
    done = conn.relay_to(client, True, b"\n", None)
    whole = chunked(*LINES)
    conn.data_received(whole[:len(whole) // 2])  # ends inside a chunk
    conn.connection_lost(ConnectionResetError())
    assert isinstance(done.exception(), UpstreamError)
    body, _ = dechunk(b"".join(client.written))  # still well framed: an error chunk can follow
    assert LINES[0] in body


async def test_client_gone_fails_with_connection_reset_and_detach_reads_on():
    conn, _ = connection()
    conn.start(b"request", is_stream, asyncio.get_running_loop().time() + 5)
    conn.data_received(STREAM_HEAD)
    client = FakeTransport()
    done = conn.relay_to(client, True, b"\n", None)
    client.closing = True
    conn.data_received(chunked(LINES[0])[:-5])
    assert isinstance(done.exception(), ConnectionResetError)
    drained = conn.detach()
    assert not drained.done()
    conn.data_received(b"0\r\n\r\n")
    assert drained.done() and drained.exception() is None and conn.keep_alive


# ---------------------------------------------------------------------------------------- over sockets


class Backend:
    """A raw HTTP/1.1 backend: each request (head + Content-Length body) is answered by `reply(conn_no, n)`."""

    def __init__(self, reply):
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.tasks: set[asyncio.Task] = set()

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader, writer):
        self.connections += 1
        number = self.connections
        self.tasks.add(asyncio.current_task())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                answer = await self.reply(number, len(self.requests))
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


def request(body=b'{"model":"m"}'):
    return b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def ok(conn_no, n):
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def test_keep_alive_reuses_one_connection():
    backend = await Backend(ok).start()
    pool = Pool(backend.url)
    for _ in range(5):
        conn = await pool.request(request(), 5, is_stream)
        assert conn.status == 200 and conn.body == b"{}"
        conn.release()
    assert backend.connections == 1 and len(backend.requests) == 5
    pool.close()
    await backend.stop()


async def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one():
    async def reply(conn_no, n):
        return None if n == 2 else await ok(conn_no, n)  # closes the kept-alive connection unanswered

    backend = await Backend(reply).start()
    pool = Pool(backend.url)
    (await pool.request(request(), 5, is_stream)).release()
    conn = await pool.request(request(), 5, is_stream)
    assert conn.status == 200 and backend.connections == 2
    conn.release()
    pool.close()
    await backend.stop()


async def test_connection_refused_and_closed_before_headers_and_header_timeout():
    backend = await Backend(ok).start()
    url = backend.url
    await backend.stop()
    with pytest.raises(OSError):
        await Pool(url).request(request(), 5, is_stream)

    async def hang_up(conn_no, n):
        return None

    backend = await Backend(hang_up).start()
    with pytest.raises(UpstreamError, match="before the response headers"):
        await Pool(backend.url).request(request(), 5, is_stream)
    await backend.stop()

    async def silent(conn_no, n):
        await asyncio.sleep(5)

    backend = await Backend(silent).start()
    with pytest.raises(TimeoutError):
        await Pool(backend.url).request(request(), 0.1, is_stream)
    await backend.stop()


async def test_stream_over_a_socket_then_the_connection_is_reused():
    async def reply(conn_no, n):
        return STREAM_HEAD + chunked(*LINES)

    backend = await Backend(reply).start()
    pool = Pool(backend.url)
    for _ in range(2):
        conn = await pool.request(request(), 5, is_stream)
        client = FakeTransport()
        await asyncio.wait_for(conn.relay_to(client, True, b"\n", None), 5)
        assert dechunk(b"".join(client.written))[0] == b"".join(LINES)
        conn.release()
    assert backend.connections == 1
    pool.close()
    await backend.stop()


async def test_cancelled_wait_closes_the_connection():
    async def silent(conn_no, n):
        await asyncio.sleep(5)

    backend = await Backend(silent).start()
    pool = Pool(backend.url)
    task = asyncio.create_task(pool.request(request(), 5, is_stream))
    while not backend.requests:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool._idle == []
    await backend.stop()


async def test_the_router_reuses_one_upstream_connection_for_sequential_requests(sims, routers, http):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim, max_concurrent=4)])
    for stream in (False, True, False, True, False):
        async with http.post(router.url + "/api/chat", json={"model": "m:1b", "stream": stream,
                                                             "messages": [{"role": "user", "content": "x"}]}) as resp:
            assert resp.status == 200
            await resp.read()
    pool = router.registry.pools["a"]
    assert len(pool._idle) == 1 and pool._idle[0].reused


@pytest.mark.parametrize("version, connection, stream", [("1.1", "", False), ("1.1", "close", False),
                                                          ("1.0", "", False), ("1.0", "keep-alive", False),
                                                          ("1.1", "", True), ("1.0", "", True)])
async def test_raw_clients_get_well_formed_answers(sims, routers, version, connection, stream):
    """Answers written straight to the client's transport keep HTTP/1.0, keep-alive and close right."""
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    body = b'{"model":"m:1b","prompt":"x","stream":%s,"options":{"num_predict":3}}' % (b"true" if stream else b"false")
    extra = f"Connection: {connection}\r\n" if connection else ""
    request = (f"POST /api/generate HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    host, port = router.url.rsplit("/", 1)[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode().lower()
    assert head.startswith(f"http/{version} 200 ok\r\n") and "\r\ndate: " in head and "x-backend-used: a" in head
    keep_alive = connection == "keep-alive" if version == "1.0" else connection != "close"
    if stream and version == "1.1":
        assert "transfer-encoding: chunked" in head
        payload = b""
        while (size := int((await reader.readuntil(b"\r\n"))[:-2], 16)) > 0:
            payload += (await reader.readexactly(size + 2))[:-2]
        assert await reader.readexactly(2) == b"\r\n"
    elif "content-length: " in head:
        payload = await reader.readexactly(int(head.split("content-length: ")[1].split("\r\n")[0]))
    else:
        payload = await asyncio.wait_for(reader.read(), 10)  # HTTP/1.0 stream: ends at the close
        keep_alive = False
    lines = [json.loads(line) for line in payload.splitlines()]
    assert lines[-1]["done"] is True and (len(lines) == 4 if stream else lines[0]["eval_count"] == 3)
    assert ("connection: close" in head) == (not keep_alive and version == "1.1")
    if keep_alive:  # the connection serves the next request too
        writer.write(request)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(f"HTTP/{version} 200".encode())
    else:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
