"""A fault-injecting HTTP proxy for the tests: it forwards each request unchanged to
an upstream (the AWS emulator), Host header included, so SigV4 signatures still check,
and fails the requests that match a rule:

- `error`: answers 500 without forwarding (the call never happened);
- `lose`: forwards, then answers 500 (the call happened, its answer was lost);
- `delay`: waits `delay` seconds, then forwards (a slow call, e.g. behind the
  Workers' limit of 6 connections);
- `throttle`: answers 400 `ThrottlingException` without forwarding (AWS throttling);
- `drop`: closes the connection without an answer, without forwarding;
- `hang`: holds the connection `delay` seconds without a byte of answer, then closes
  it, without forwarding (a half-open connection: only a caller's timeout ends the call).

A rule matches when its `match` string is in the request's X-Amz-Target header or
body; it applies `count` times (None: until removed) or until `until` (monotonic time).
Every request's operation is recorded in `calls` (what the benchmarks count), the
capacity DynamoDB answers is added up in `usage` (`meter()`: what bench/cost.py prices;
`BatchGetItem`, which the emulator does not meter, estimated: `estimatedRead`),
and the bodies of the requests whose operation contains a string given to `record` in
`recorded` (what the history checker hands to SQS again as a duplicate delivery).
"""

import http.client
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# DynamoDB operations whose units are read units.
READS = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")


def new_usage() -> dict:
    return {"write": 0.0, "read": 0.0, "estimatedRead": 0.0, "indexWrite": {}, "indexRead": {}, "refused": 0, "dynamodb": {}, "sqs": 0}


def batch_get_units(request: bytes) -> float:
    """What AWS bills a `BatchGetItem` the emulator answers without units: each key read
    is one unit strongly consistent, half eventually (items up to 4 KB, as every item read
    this way is: a message's item, a single message's body), found or not."""
    try:
        items = json.loads(request or b"{}").get("RequestItems", {})
    except ValueError:
        return 0.0
    return sum(len(t.get("Keys", [])) * (1.0 if t.get("ConsistentRead") else 0.5) for t in items.values())


FAILED = b'{"__type":"com.amazonaws#InternalFailure","message":"injected by the fault proxy"}'
THROTTLED = b'{"__type":"com.amazonaws#ThrottlingException","message":"Rate exceeded (injected by the fault proxy)"}'


class FaultProxy:
    def __init__(self, upstream: str):
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.rules = []
        self.hits = []  # (mode, match) of each request a rule failed
        self.settled = 0  # requests a rule matched whose answer has been given
        self.calls = []  # the operation (X-Amz-Target, or the path) of every request
        self.recording = []  # operations whose request bodies are kept
        self.recorded = []  # (operation, body) of those requests, answered 2xx
        self.usage = new_usage()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # An answer goes out as two writes (its head, then its body): with Nagle's
            # algorithm the body waits for the caller's delayed ACK of the head, 40 ms
            # on a reused connection, which every call through the proxy paid.
            disable_nagle_algorithm = True

            def _any(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with proxy.lock:
                    proxy.calls.append(self.headers.get("x-amz-target") or self.path)
                mode, delay = proxy._match(self.headers.get("x-amz-target", ""), body)
                try:
                    self._forward(body, mode, delay)
                except OSError:
                    pass  # the upstream or the caller went away (a stopped emulator, a killed worker)
                finally:
                    if mode:
                        with proxy.lock:
                            proxy.settled += 1

            def _forward(self, body, mode, delay):
                if mode == "delay":
                    time.sleep(delay)
                if mode == "error":
                    return self._answer(500, FAILED, "application/x-amz-json-1.0")
                if mode == "throttle":
                    return self._answer(400, THROTTLED, "application/x-amz-json-1.0")
                if mode == "hang":
                    time.sleep(delay)
                if mode in ("drop", "hang"):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    target = self.headers.get("x-amz-target", "")
                    proxy._meter(target, r.status, data, body)
                    if r.status < 300 and any(m in target for m in proxy.recording):
                        with proxy.lock:
                            proxy.recorded.append((target, body))
                    if mode == "lose":
                        return self._answer(500, FAILED, "application/x-amz-json-1.0")
                    self._answer(r.status, data, r.getheader("content-type", "application/json"))
                finally:
                    conn.close()

            def _answer(self, status, data, content_type):
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # A client that hangs up (a process killed mid-request, a connection the
                # proxy dropped on purpose) is part of the faults, not an error.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, match: str, mode: str = "error", count: int | None = None, seconds: float | None = None, delay: float = 0):
        """Fails (or, with mode `delay`, slows) requests containing `match` (see the
        module's doc)."""
        assert mode in ("error", "lose", "delay", "throttle", "drop", "hang")
        until = time.monotonic() + seconds if seconds is not None else None
        with self.lock:
            self.rules.append({"match": match, "mode": mode, "count": count, "until": until, "delay": delay})

    def record(self, operation: str):
        """Keeps the bodies of the requests whose X-Amz-Target contains `operation`
        (those the upstream accepted) in `recorded`."""
        with self.lock:
            self.recording.append(operation)

    def clear_rules(self):
        """No more faults (what is recorded stays)."""
        with self.lock:
            self.rules.clear()

    def clear(self):
        with self.lock:
            self.recorded.clear()
            self.rules.clear()
            self.hits.clear()
            self.settled = 0

    def wait_settled(self, timeout: float = 30):
        """Until every request a rule matched has been answered (a held call has landed)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.settled >= len(self.hits):
                    return
            assert time.monotonic() < deadline, "a held request was not answered"
            time.sleep(0.05)

    def _match(self, target: str, body: bytes):
        now = time.monotonic()
        with self.lock:
            for rule in self.rules:
                live = (rule["count"] is None or rule["count"] > 0) and (rule["until"] is None or now < rule["until"])
                if live and (rule["match"] in target or rule["match"].encode() in body):
                    if rule["count"] is not None:
                        rule["count"] -= 1
                    self.hits.append((rule["mode"], rule["match"]))
                    return rule["mode"], rule["delay"]
        return None, 0

    def _meter(self, target: str, status: int, data: bytes, request: bytes = b""):
        service, _, op = target.partition(".")
        with self.lock:
            u = self.usage
            if service.startswith("AmazonSQS"):
                u["sqs"] += 1
            if not service.startswith("DynamoDB"):
                return
            u["dynamodb"][op] = u["dynamodb"].get(op, 0) + 1
            try:
                answer = json.loads(data or b"{}")
            except ValueError:
                return
            if status >= 300:
                # A refused conditional write is billed by AWS (the emulator answers no
                # units for it): counted apart.
                if any(e in str(answer.get("__type", "")) for e in ("ConditionalCheckFailed", "TransactionCanceled")):
                    u["refused"] += 1
                return
            kind = "read" if op in READS else "write"
            entries = answer.get("ConsumedCapacity") or []
            if not entries and op == "BatchGetItem":
                units = batch_get_units(request)
                u["read"] += units
                u["estimatedRead"] += units
            for e in entries if isinstance(entries, list) else [entries]:
                indexes = {**e.get("GlobalSecondaryIndexes", {}), **e.get("LocalSecondaryIndexes", {})}
                index_units = {k: v.get("CapacityUnits", 0) for k, v in indexes.items()}
                table = e.get("Table", {}).get("CapacityUnits")
                # `CapacityUnits` is the whole (table and indexes); `Table` the table's part.
                u[kind] += e.get("CapacityUnits", (table or 0) + sum(index_units.values()))
                for k, v in index_units.items():
                    u[f"index{kind.title()}"][k] = u[f"index{kind.title()}"].get(k, 0) + v

    def meter(self) -> dict:
        """A copy of what was metered so far: DynamoDB `write` and `read` units (table
        and indexes together), `indexWrite`/`indexRead` units by index, `refused`
        conditional writes, calls by operation (`dynamodb`), and `sqs` requests."""
        with self.lock:
            return json.loads(json.dumps(self.usage))

    @staticmethod
    def meter_since(now: dict, before: dict) -> dict:
        """What was metered between two `meter()` readings."""
        def minus(a, b):
            if isinstance(a, dict):
                return {k: minus(v, b.get(k, 0)) for k, v in a.items()}
            return a - b
        return minus(now, before)

    def stop(self):
        self.server.shutdown()
