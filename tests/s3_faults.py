"""A fault-injecting HTTP proxy in front of an S3-protocol server (the tests' moto), for tests of what the job does
when S3 misbehaves: throttling and 5xx answers, connections reset before or after a request took effect, response
bodies cut short. The job needs no hook of its own: it (its driver and its Ray workers alike) just points
`storage.endpoint_url` at `FaultyS3.url`, and every S3 call it makes crosses the proxy. Standard library only.

    with FaultyS3(upstream=s3_endpoint, seed=0) as proxy:
        proxy.set_rates({"GET": 0.2}, faults=("503", "reset", "cut"))
        proxy.add_rule(lambda r: r.method == "PUT" and r.path.endswith("/lease.json"), fault="reset-after")
        ...  # run the job with storage.endpoint_url=proxy.url
        proxy.injected, proxy.log, proxy.requests

The faults (FAULTS):
    "503"          S3's SlowDown error (XML body), the request not forwarded;
    "500"          S3's InternalError, the request not forwarded;
    "reset"        the connection reset (RST, no response) before forwarding: the request never reaches S3;
    "reset-after"  forwarded and applied by S3 (a PUT stored, a DELETE done), then reset: the client never learns;
    "cut"          forwarded; the full response headers (the real Content-Length) and half the body, then reset;
                   where there is no body (HEAD, an empty one), the header block itself is cut.

Run as a script (`python tests/s3_faults.py --upstream URL --rate GET=0.1 --faults 503,reset`), it prints its URL
on the first line of stdout and serves until interrupted, for a job launched by hand against a moto server.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import http.client
import io
import random
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

FAULTS = ("503", "500", "reset", "reset-after", "cut")
ALIASES = {"reset-before": "reset"}
KINDS = ("GET", "PUT", "HEAD", "POST", "DELETE", "LIST")  # LIST: a GET with list-type=2 (ListObjectsV2)
ANY_KIND = "*"  # a rate for every kind not named
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
)
CHUNK = 64 * 1024  # response bodies are relayed in pieces this big, never held whole
CUT_PAUSE_S = 0.01  # between a cut body's last byte and the reset, so the client reads what was sent first
UPSTREAM_TIMEOUT_S = 60.0
ERRORS = {
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass(frozen=True)
class S3Request:
    """What a rule sees of a request: its method, path (percent-encoded as sent, without the query), query (as
    parse_qs gives it, blank values kept: `?uploads` is {"uploads": [""]}) and headers (names lower-cased)."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]

    @property
    def kind(self) -> str:
        """The method, except that a listing (GET with list-type) is LIST, so that rates can tell them apart."""
        return "LIST" if self.method == "GET" and "list-type" in self.query else self.method

    @property
    def bucket(self) -> str:
        """The bucket of a path-style request (botocore's style for an IP endpoint)."""
        return unquote(self.path.lstrip("/").partition("/")[0])

    @property
    def key(self) -> str:
        """The object key of a path-style request, decoded; empty for a bucket-level request."""
        return unquote(self.path.lstrip("/").partition("/")[2])


class Injection(NamedTuple):
    method: str
    path: str
    fault: str


@dataclass
class Rule:
    """A fault for chosen requests: those `predicate` accepts, past the first `skip` of them, `times` of them
    (None: all). `matched` and `hits` count the matching requests seen and the faults injected."""

    predicate: Callable[[S3Request], bool]
    fault: str
    times: int | None = 1
    skip: int = 0
    matched: int = 0
    hits: int = 0

    @property
    def spent(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def take(self, request: S3Request) -> bool:
        """Whether this rule faults `request` (counting it); called under the proxy's lock."""
        if not self.predicate(request):
            return False
        self.matched += 1
        if self.matched <= self.skip or self.spent:
            return False
        self.hits += 1
        return True


def canonical(fault: str) -> str:
    fault = ALIASES.get(fault, fault)
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; the faults are {', '.join(FAULTS)}")
    return fault


class FaultyS3:
    """The proxy: started in a thread of this process by start() or `with`; thread-safe throughout, since each
    client connection has a thread of its own (boto3's pool opens several, and keeps them alive)."""

    def __init__(self, upstream: str, seed: int = 0, host: str = "127.0.0.1", port: int = 0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self._address = (host, port)
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._rates: dict[str, float] = {}
        self._faults: tuple[str, ...] = ()
        self._rules: list[Rule] = []
        self._log: list[Injection] = []
        self._requests = 0
        self._errors: list[str] = []
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> FaultyS3:
        if self._server is not None:
            raise RuntimeError("the proxy is running already")
        self._server = _Server(self._address, self)
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)  # stop() waits out one interval
        self._thread = threading.Thread(target=serve, name="faulty-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop the connections still open (boto3 keeps idle ones), so nothing outlives it."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            open_now = list(self._connections)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultyS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint to give the client: storage.endpoint_url=<url>."""
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # What to inject

    def set_rates(self, rates: Mapping[str, float], faults: Iterable[str] = FAULTS) -> None:
        """Fault each request of a kind (KINDS, or "*" for the kinds not named) with its probability, the fault
        drawn uniformly from `faults`, both from the seeded generator (so a run's sequence of requests meets the
        same faults again). Replaces the rates set before; {} turns them off."""
        for kind, rate in rates.items():
            if kind not in (*KINDS, ANY_KIND):
                raise ValueError(f"unknown request kind {kind!r}; the kinds are {', '.join(KINDS)} and {ANY_KIND}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"the rate for {kind} must lie in [0, 1], not {rate}")
        chosen = tuple(canonical(fault) for fault in faults)
        if any(rates.values()) and not chosen:
            raise ValueError("rates need at least one fault to draw from")
        with self._lock:
            self._rates = dict(rates)
            self._faults = chosen

    def add_rule(
        self, predicate: Callable[[S3Request], bool], fault: str, times: int | None = 1, skip: int = 0
    ) -> Rule:
        """Fault chosen requests: rules are tried in the order added, before the rates, and the first one that
        takes a request decides its fault. The Rule returned counts its matches and hits."""
        rule = Rule(predicate, canonical(fault), times, skip)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """No more faults (rates and rules gone); the counts and the log stay."""
        with self._lock:
            self._rates, self._faults, self._rules = {}, (), []

    # What happened

    @property
    def requests(self) -> int:
        """Requests seen, faulted or not."""
        with self._lock:
            return self._requests

    @property
    def log(self) -> list[Injection]:
        """Every fault injected, in order: (method, path, fault)."""
        with self._lock:
            return list(self._log)

    @property
    def injected(self) -> collections.Counter[str]:
        """Faults injected, by kind of fault."""
        with self._lock:
            return collections.Counter(entry.fault for entry in self._log)

    @property
    def errors(self) -> list[str]:
        """The proxy's own failures (upstream unreachable, a rule's predicate raising): a test asserts none, so
        that a broken proxy is not mistaken for a fault it meant to inject."""
        with self._lock:
            return list(self._errors)

    # For the handler threads

    def _choose(self, request: S3Request) -> str | None:
        with self._lock:
            self._requests += 1
            fault = next((rule.fault for rule in self._rules if rule.take(request)), None)
            rate = self._rates.get(request.kind, self._rates.get(ANY_KIND, 0.0))
            if fault is None and rate > 0 and self._random.random() < rate:
                fault = self._random.choice(self._faults)
            if fault is not None:
                self._log.append(Injection(request.method, request.path, fault))
            return fault

    def _error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def _track(self, connection: socket.socket, is_open: bool) -> None:
        with self._lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an idle keep-alive connection must not hold up stop()

    def __init__(self, address: tuple[str, int], proxy: FaultyS3):
        self.proxy = proxy
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was reset on purpose) is no error; anything else is the proxy's own."""
        if not isinstance(sys.exc_info()[1], OSError):
            self.proxy._error(traceback.format_exc())


class _Closed(Exception):
    """The client's connection broke while its request was read: nothing to answer."""


class _Handler(BaseHTTPRequestHandler):
    """One client connection, HTTP/1.1 keep-alive: requests relayed one after another, each to a fresh upstream
    connection (cheap on loopback, and no stale upstream connection to retry on)."""

    protocol_version = "HTTP/1.1"  # also answers botocore's `Expect: 100-continue` at once (handle_expect_100)
    timeout = 120  # an idle client connection is closed after this; boto3 notices and opens another
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Head and body go out in separate writes: without this, Nagle's algorithm meets the client's delayed ACK
        # and each response waits 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.proxy._track(self.connection, True)

    def finish(self) -> None:
        self.server.proxy._track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    def _relay(self) -> None:
        proxy = self.server.proxy
        try:
            body = self._read_body()
        except (_Closed, ValueError):
            self.close_connection = True
            return
        path, _, query = self.path.partition("?")
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = S3Request(self.command, path, parse_qs(query, keep_blank_values=True), headers)
        try:
            fault = proxy._choose(request)
        except Exception as exc:
            proxy._error(f"a rule failed on {self.command} {self.path}: {exc!r}")
            self._answer(502, "Bad Gateway", [], f"a fault rule raised {exc!r}".encode())
            return
        if fault in ERRORS:
            self._s3_error(*ERRORS[fault])
            return
        if fault == "reset":
            self._reset()
            return
        try:
            upstream, response = self._forward(body)
        except (OSError, http.client.HTTPException) as exc:
            proxy._error(f"upstream failed on {self.command} {self.path}: {exc!r}")
            self._answer(502, "Bad Gateway", [], f"upstream failed: {exc!r}".encode())
            return
        with contextlib.closing(upstream):
            if fault == "reset-after":
                response.read()  # S3 has answered, so it has applied the request
                self._reset()
            else:
                self._pass_on(response, cut=fault == "cut")

    def _read_body(self) -> bytes:
        """The request's body, whole (a multipart part is boto3's 8 MiB at most): by Content-Length, or de-chunked
        where it came chunked (HTTP trailers dropped). botocore over http:// sends Content-Length with plain bytes,
        its checksum in a header; aws-chunked bodies (over https) would pass through as the payload they are."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces = []
            while size := int(self._line().split(b";")[0].strip(), 16):
                pieces.append(self._exactly(size))
                self._line()
            while self._line().strip():
                pass
            return b"".join(pieces)
        length = int(self.headers.get("Content-Length") or 0)
        return self._exactly(length) if length else b""

    def _line(self) -> bytes:
        line = self.rfile.readline(65537)
        if not line:
            raise _Closed
        return line

    def _exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise _Closed
        return data

    def _forward(self, body: bytes) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The request as it came (method, path and query, headers, Host as sent: it is signed), less hop-by-hop
        headers; Content-Length set from the body read."""
        host, port = self.server.proxy.upstream
        upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            if "Host" not in self.headers:
                upstream.putheader("Host", f"{host}:{port}")
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body or "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            return upstream, upstream.getresponse()
        except BaseException:
            upstream.close()
            raise

    def _pass_on(self, response: http.client.HTTPResponse, cut: bool) -> None:
        """The upstream's answer, its body streamed with its Content-Length; or, cut, half of it and a reset."""
        headers = [(name, value) for name, value in response.getheaders() if name.lower() not in HOP_BY_HOP]
        bodyless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        source: io.BufferedIOBase | http.client.HTTPResponse = response
        if bodyless:
            length = 0
        elif response.getheader("Content-Length") is None:  # chunked or to-EOF upstream: re-framed with a length
            whole = response.read()
            source, length = io.BytesIO(whole), len(whole)
            headers.append(("Content-Length", str(length)))
        else:
            length = int(response.getheader("Content-Length", "0"))
        head = self._head(response.status, response.reason, headers)
        if cut and length == 0:
            self.wfile.write(head[: len(head) // 2])
            self._reset()
            return
        self.wfile.write(head)
        remaining = length // 2 if cut else length
        while remaining > 0:
            piece = source.read(min(CHUNK, remaining))
            if not piece:  # the upstream's body ended early: the client must not wait for the rest
                self.close_connection = True
                return
            self.wfile.write(piece)
            remaining -= len(piece)
        if cut:
            time.sleep(CUT_PAUSE_S)
            self._reset()

    def _s3_error(self, status: int, reason: str, code: str, message: str) -> None:
        """An error as S3 sends it: XML naming the code, request ids in headers (no body for a HEAD)."""
        request_id = uuid.uuid4().hex[:16].upper()
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>faulty-s3</HostId></Error>"
        )
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id), ("x-amz-id-2", "faulty-s3")]
        self._answer(status, reason, headers, xml.encode())

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        if self.command == "HEAD":
            body = b""
        self.wfile.write(self._head(status, reason, [*headers, ("Content-Length", str(len(body)))]) + body)

    def _head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
        """The status line and header block; Server and Date are the upstream's where it sent them."""
        names = {name.lower() for name, _ in headers}
        defaults = (("Server", "faulty-s3"), ("Date", formatdate(usegmt=True)))
        extra = [(name, value) for name, value in defaults if name.lower() not in names]
        if self.close_connection:
            extra.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in [*headers, *extra])]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _reset(self) -> None:
        """Close with SO_LINGER 0, so that the kernel sends RST and the client reads ECONNRESET, not a clean EOF.
        (The socket closes only once the reader made from it has, hence that first; the writer holds no
        reference, and stays open for the base class's flush.)"""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()
        self.connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fault-injecting proxy in front of an S3-protocol endpoint.")
    parser.add_argument("--upstream", required=True, help="the S3 endpoint, e.g. http://127.0.0.1:5000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--rate", action="append", default=[], metavar="KIND=RATE", help="e.g. GET=0.05, *=0.01")
    parser.add_argument("--faults", default=",".join(FAULTS), help="the faults the rates draw from, comma-separated")
    args = parser.parse_args(argv)
    rates = {kind: float(rate) for kind, _, rate in (spec.partition("=") for spec in args.rate)}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with FaultyS3(args.upstream, seed=args.seed, host=args.host, port=args.port) as proxy:
        proxy.set_rates(rates, faults=[fault for fault in args.faults.split(",") if fault])
        print(proxy.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            print(f"requests {proxy.requests}, injected {dict(proxy.injected)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
