"""A lean HTTP/1.1 client for the forwarding hot path: per-backend keep-alive pools of asyncio Protocols.

aiohttp's ClientSession builds a request object, a connection key, timers and a response object per
request, and wakes the relaying task through a StreamReader for every body chunk. This client writes
the request with one call, parses the response head itself and handles body bytes inside
`data_received`: collected whole for plain bodies, handed to the client's transport as they arrive for
streams (no task wake-up per chunk).

Framing towards the client: when both sides speak chunked encoding, complete upstream chunks are
written as they came (not re-framed); a chunk cut by the end of a read is re-framed piece by piece, so
what the client has received always ends on a chunk boundary and an in-band error chunk can follow at
any time. The terminal chunk is not passed on: the relay ends the response itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable

from yarl import URL

_MAX_HEAD = 64 * 1024          # response status line + headers
_MAX_LINE = 4 * 1024           # a chunk-size line, or the trailer section
_HIGH_WATER = 64 * 1024        # client write buffer above which reading the backend pauses
IDLE_SECONDS = 30.0            # a pooled connection idle longer than this is not reused
_HEX = b"0123456789abcdefABCDEF"

_IDLE, _HEAD, _BODY, _DONE = range(4)        # phases of a connection
_CHUNKED, _LENGTH, _UNTIL_CLOSE = range(3)   # how the response body is delimited


class UpstreamError(Exception):
    """The exchange with the backend failed; str() says how (health reports, in-band error lines)."""


class _Stale(UpstreamError):
    """A reused keep-alive connection was closed by the backend before any byte of the answer."""


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].rstrip(b" \t")
    if not digits or len(digits) > 15 or digits.translate(None, _HEX):
        raise UpstreamError(f"malformed chunk size line {line[:40]!r}")
    return int(digits, 16)


class Connection(asyncio.Protocol):
    """One keep-alive connection to a backend, and the state of the exchange it is carrying.

    After `Pool.request` returns: `status`, `headers` (name, value pairs as received), `streaming`;
    for plain bodies `body` holds the whole payload; streams are passed on by `relay_to`.
    """

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop):
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._phase = _IDLE
        self._ready: asyncio.Future | None = None
        self._done: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._out: asyncio.Transport | None = None
        self._drain_task: asyncio.Task | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self._timer is not None:
            self._timer.cancel()
        phase = self._phase
        if phase == _HEAD:
            if self.reused and not self._got_bytes:
                self._fail(_Stale("kept-alive connection closed by the backend"))
            else:
                self._fail(UpstreamError("connection failed: closed before the response headers"))
        elif phase == _BODY and (self._attached or not self.streaming):
            self._settle_closed()
        # A stream not yet handed to relay_to is settled there.

    def _settle_closed(self) -> None:
        """The connection closed during the body: the end of a read-until-close body, else a failure."""
        if self._framing == _UNTIL_CLOSE:
            self._finish()
        else:
            self._fail(UpstreamError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        phase = self._phase
        if phase != _BODY:
            if phase != _HEAD:  # bytes nobody asked for: the connection is out of step
                self.keep_alive = False
                if phase == _IDLE:
                    self.close()
                return
            body = self._parse_head(data)
            if body is None or self._phase != _BODY or not body:
                return
            data = body
        self.progress += 1
        if self.streaming and not self._attached:
            self._early.append(data)
            return
        self._feed(data)

    def eof_received(self) -> bool:
        return False  # close; connection_lost ends a read-until-close body or reports the loss

    # ---- one exchange --------------------------------------------------------------------

    def start(self, data: bytes, is_stream: Callable[[int, str], bool], deadline: float) -> asyncio.Future:
        """Send a request (head and body in `data`); the future resolves when the answer may be relayed."""
        self._phase = _HEAD
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.streaming = False
        self.keep_alive = True
        self.body = b""
        self.progress = 0            # reads since the head; the idle watchdog watches it
        self.events = 0              # separators seen in stream payload (NDJSON lines, SSE events)
        self.payload_bytes = 0
        self.first_body_at: float | None = None
        self.finished_at: float | None = None
        self._is_stream = is_stream
        self._got_bytes = False
        self._head = b""
        self._framing = _UNTIL_CLOSE
        self._left = 0               # body bytes still due (Content-Length), or the rest of a chunk
        self._crlf = False           # the CRLF that closes a chunk's data is due
        self._pending = b""          # a cut-off chunk-size line, CRLF or trailer section
        self._parts: list[bytes] = []
        self._early: list[bytes] = []  # stream bytes that came before relay_to
        self._attached = False
        self._error: Exception | None = None
        self._framed = False
        self._sep = b"\n"
        self._out = None
        self._done = None
        self._ready = ready = self.loop.create_future()
        self._timer = self.loop.call_at(deadline, self._timed_out)
        self.transport.write(data)
        return ready

    def get(self, name: str, default: str | None = None) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return default

    def relay_to(self, client: asyncio.Transport, framed: bool, separator: bytes, drain) -> asyncio.Future:
        """Pass the stream on to `client` (chunk-framed when `framed`); resolves at its end.

        Fails with UpstreamError when the backend breaks, ConnectionResetError when the client has gone.
        `drain` is a coroutine function that returns once the client's write buffer has room again.
        """
        self._out = client
        self._framed = framed
        self._sep = separator
        self._drain = drain
        return self._attach()

    def detach(self) -> asyncio.Future:
        """Stop writing to the client (it left); the future resolves when the backend's answer has ended."""
        self._out = None
        self._resume()
        if self._done is not None and self._done.done() and self._phase == _BODY:
            self._done = None  # it failed for the client's leaving; the backend's answer goes on
        return self._done if self._done is not None else self._attach()

    def _attach(self) -> asyncio.Future:
        self._attached = True
        self._done = done = self.loop.create_future()
        early, self._early = self._early, []
        if early:
            self._feed(b"".join(early))
        if self._phase == _BODY and self.closed:
            self._settle_closed()
        elif self._phase == _DONE and not done.done():
            if self._error is not None:
                done.set_exception(self._error)
                done.exception()
            else:
                done.set_result(None)
        return done

    def release(self) -> None:
        """The caller is done with the answer: back to the pool when complete and reusable, else closed."""
        if (self._phase == _DONE and self.keep_alive and not self.closed and self._drain_task is None
                and not self.transport.is_closing()):
            self._phase = _IDLE
            self._out = self._ready = self._done = None
            self._parts = self._early = []
            self.body = b""
            self.pool._put(self)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection (the backend sees the request abandoned); pending waits fail."""
        self._out = None
        if self._timer is not None:
            self._timer.cancel()
        self._fail(UpstreamError("connection closed"), close=True)

    # ---- parsing -------------------------------------------------------------------------

    def _parse_head(self, data: bytes) -> bytes | None:
        """Parse the status line and headers; returns the body bytes that followed them (None: not yet)."""
        buf = self._head + data if self._head else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._fail(UpstreamError("response head too large"), close=True)
                else:
                    self._head = buf
                return None
            head, buf = buf[:end], buf[end + 4:]
            try:
                status = self._read_head(head)
            except (ValueError, UpstreamError) as error:
                self._fail(UpstreamError(f"malformed response head: {error}"), close=True)
                return None
            if status >= 200:
                break
            # 1xx (100 Continue, 103 Early Hints): interim; the real answer follows
        self._head = b""
        self._timer.cancel()
        self._phase = _BODY
        content_type = self.get("Content-Type", "")
        self.streaming = self._is_stream(status, content_type)
        if self.streaming:
            self._ready.set_result(self)
        if self._framing == _LENGTH and self._left == 0:
            self._finish()
        return buf

    def _read_head(self, head: bytes) -> int:
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise UpstreamError(f"bad status line {lines[0][:60]!r}")
        status = int(code)
        headers: list[tuple[str, str]] = []
        length = None
        chunked = has_te = False
        keep_alive = version == "HTTP/1.1"
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # obsolete line folding
                name, value = headers.pop()
                headers.append((name, value + " " + line.strip(" \t")))
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise UpstreamError(f"bad header line {line[:60]!r}")
            value = value.strip(" \t")
            headers.append((name, value))
            lowered = name.lower()
            if lowered == "content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise UpstreamError(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif lowered == "transfer-encoding":
                has_te = True
                chunked = value.lower().rstrip().endswith("chunked")
            elif lowered == "connection":
                tokens = {t.strip().lower() for t in value.split(",")}
                if "close" in tokens:
                    keep_alive = False
                elif "keep-alive" in tokens:
                    keep_alive = True
        self.status = status
        self.headers = headers
        self.keep_alive = keep_alive
        if status < 200 or status in (204, 304):
            self._framing, self._left = _LENGTH, 0
        elif has_te:
            self._framing = _CHUNKED if chunked else _UNTIL_CLOSE
        elif length is not None:
            self._framing, self._left = _LENGTH, length
        else:
            self._framing = _UNTIL_CLOSE
        if self._framing == _UNTIL_CLOSE:
            self.keep_alive = False
        return status

    def _feed(self, data: bytes) -> None:
        """Body bytes: to the client for streams (as framed output), into `_parts` for plain bodies."""
        out: list[bytes] = []
        framing = self._framing
        try:
            if framing == _CHUNKED:
                done = self._dechunk(data, out)
            else:
                if framing == _LENGTH:
                    left = self._left
                    if len(data) > left:
                        self.keep_alive = False  # bytes beyond the answer: do not reuse
                        data = data[:left]
                    self._left = left - len(data)
                    done = self._left == 0
                else:
                    done = False
                if data:
                    self._piece(data, 0, len(data), out)
        except UpstreamError as error:
            self._fail(error, close=True)
            return
        if out:
            if self.streaming:
                self._write(out)
            else:
                self._parts.extend(out)
        if done:
            self._finish()

    def _piece(self, data: bytes, start: int, stop: int, out: list[bytes]) -> None:
        """Payload data[start:stop] as its own chunk (framed) or as is."""
        piece = data if start == 0 and stop == len(data) else data[start:stop]
        if self._framed:
            out.append(b"%x\r\n" % (stop - start))
            out.append(piece)
            out.append(b"\r\n")
        else:
            out.append(piece)
        self.events += data.count(self._sep, start, stop)
        self.payload_bytes += stop - start
        if self.first_body_at is None:
            self.first_body_at = time.monotonic()

    def _dechunk(self, data: bytes, out: list[bytes]) -> bool:
        """Walk chunked framing; True once the terminal chunk (and any trailers) has arrived."""
        if self._pending:
            data = self._pending + data
            self._pending = b""
        framed = self._framed
        sep = self._sep
        pos, n = 0, len(data)
        while pos < n:
            if self._left:  # the rest of a chunk that began in an earlier read
                take = min(self._left, n - pos)
                self._piece(data, pos, pos + take, out)
                pos += take
                self._left -= take
                if self._left:
                    return False
                self._crlf = True
                continue
            if self._crlf:  # the CRLF after a chunk's data
                if n - pos < 2 and data[pos:pos + 1] == b"\r":
                    self._pending = data[pos:]
                    return False
                if data[pos:pos + 2] != b"\r\n":
                    raise UpstreamError("chunk data not followed by CRLF")
                pos += 2
                self._crlf = False
                continue
            # At a chunk-size line: the whole chunks of this read go on as one span, unchanged.
            span = pos
            size = -1
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = _chunk_size(data[pos:eol])
                start = eol + 2
                stop = start + size
                if size == 0 or stop + 2 > n:
                    break
                if data[stop:stop + 2] != b"\r\n":
                    raise UpstreamError("chunk data not followed by CRLF")
                self.events += data.count(sep, start, stop)
                self.payload_bytes += size
                if not framed:
                    out.append(data[start:stop])
                pos = stop + 2
                size = -1
            if pos > span:
                if self.first_body_at is None:
                    self.first_body_at = time.monotonic()
                if framed:
                    out.append(data if span == 0 and pos == n else data[span:pos])
            if pos == n:
                return False
            if size == 0:  # the terminal chunk: done once the (usually empty) trailer section is in
                end = data.find(b"\r\n\r\n", eol)
                if end >= 0:
                    if end + 4 < n:
                        self.keep_alive = False  # bytes beyond the answer: do not reuse
                    return True
            if size <= 0:  # a cut-off size line or trailer section: wait for the rest
                if n - pos > _MAX_LINE:
                    raise UpstreamError("chunk-size line or trailers too long")
                self._pending = data[pos:]
                return False
            take = min(size, n - start)  # a chunk cut off by the end of this read
            if take:
                self._piece(data, start, start + take, out)
            self._left = size - take
            pos = start + take
            if not self._left:
                self._crlf = True
        return False

    # ---- delivery ------------------------------------------------------------------------

    def _write(self, out: list[bytes]) -> None:
        client = self._out
        if client is None:
            return  # detached: the answer is read to its end and dropped
        if client.is_closing():
            self._out = None
            if self._done is not None and not self._done.done():
                self._done.set_exception(ConnectionResetError("the client went away"))
            return
        client.write(out[0] if len(out) == 1 else b"".join(out))
        if client.get_write_buffer_size() > _HIGH_WATER and self._drain_task is None and not self.closed:
            # A slow client: stop reading the backend (TCP pushes back on it) until the client drains.
            self.transport.pause_reading()
            self._drain_task = self.loop.create_task(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            with contextlib.suppress(Exception):  # the client went away: the relay's end cleans up
                await self._drain()
        finally:
            self._resume()

    def _resume(self) -> None:
        if self._drain_task is not None:
            self._drain_task = None
            if not self.closed and self.transport is not None:
                self.transport.resume_reading()

    def _finish(self) -> None:
        self._phase = _DONE
        self.finished_at = time.monotonic()
        if self.streaming:
            if self._done is not None and not self._done.done():
                self._done.set_result(None)
        else:
            parts = self._parts
            self.body = parts[0] if len(parts) == 1 else b"".join(parts)
            self._parts = []
            if not self._ready.done():
                self._ready.set_result(self)

    def _fail(self, error: Exception, close: bool = False) -> None:
        """End the exchange with `error` for whoever waits on it; close the connection when asked."""
        self.keep_alive = False
        if self._phase in (_HEAD, _BODY):
            if self._phase == _BODY and not self.streaming:
                error = UpstreamError(f"body read failed: {error}")
            self._phase = _DONE
            self._error = error
            for future in (self._ready, self._done):
                if future is not None and not future.done():
                    future.set_exception(error)
                    future.exception()  # whoever awaits it still gets it; nobody waiting is no error
                    break
        if close and not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
            self.pool._forget(self)

    def _timed_out(self) -> None:
        self._fail(TimeoutError(), close=True)


class Pool:
    """Keep-alive connections to one backend URL (most recently used first)."""

    def __init__(self, url: str, connect_timeout: float = 5.0):
        parsed = URL(url)
        self.url = url
        self.host = parsed.raw_host or ""
        self.port = parsed.port
        self.connect_timeout = connect_timeout
        self.tls = parsed.scheme == "https"
        netloc = parsed.host_subcomponent or self.host
        if not parsed.is_default_port():
            netloc += f":{parsed.port}"
        self.host_header = netloc.encode("ascii")  # yarl keeps hosts IDNA-encoded
        self.prefix = parsed.raw_path.rstrip("/").encode()
        self._idle: list[Connection] = []
        self._ssl: ssl.SSLContext | None = None

    async def request(self, data: bytes, header_timeout: float,
                      is_stream: Callable[[int, str], bool]) -> Connection:
        """Send `data` (a whole request) and wait for the answer's head (and whole body unless a stream).

        Raises TimeoutError past header_timeout (connecting included), OSError when the backend
        cannot be reached, UpstreamError when it answers with something that is not HTTP/1.x.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + header_timeout
        conn = self._take(loop)
        while True:
            if conn is None:
                conn = await self._connect(loop, deadline)
            try:
                await conn.start(data, is_stream, deadline)
                return conn
            except _Stale:
                # The backend closed a pooled connection as the request went out: it never saw the
                # request, so one retry on a fresh connection is safe.
                conn = None
            except BaseException:
                conn.close()
                raise

    def _take(self, loop: asyncio.AbstractEventLoop) -> Connection | None:
        idle = self._idle
        now = loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_SECONDS and not conn.transport.is_closing():
                conn.reused = True
                return conn
            conn.close()
        return None

    def _put(self, conn: Connection) -> None:
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)

    def _forget(self, conn: Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> Connection:
        conn = Connection(self, loop)
        context = None
        if self.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        async with asyncio.timeout(min(self.connect_timeout, deadline - loop.time())):
            await loop.create_connection(lambda: conn, self.host, self.port, ssl=context)
        return conn

    def close(self) -> None:
        """Close the idle connections (ones in use are closed by whoever holds them)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.close()
            except RuntimeError:  # the event loop is already closed
                pass
