"""What the end-to-end tests share, built on `devstack` (which starts the parts): the
edge's settings and a client for it, tokens, a reader of what reached SQS and the
ledger (the emulator's root key), the backend behind the edge's tests, and `System`,
the whole system with worker processes started on demand, with the measures the
tests apply to what the gateway received (rolling windows, spans). Test modules import
from here and from nothing else of the suite."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devstack import provision as prov  # noqa: E402
from devstack import stack  # noqa: E402
from devstack.windows import max_in_window  # noqa: E402,F401  (the tests' measure of the limit)

JWT_SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
BASE = "/api/onlyfans/messaging"
ORIGIN = "https://app.example.com"
LOGS = Path(stack.ROOT) / "target" / "e2e-logs"


class Jwks:
    """A real HTTP server publishing a JWKS that tests can rotate."""

    def __init__(self):
        self.keys = {
            "rsa-1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ec-1": ("ES256", ec.generate_private_key(ec.SECP256R1())),
            "ed-1": ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
        }
        self.published = set(self.keys)
        self.fetches = 0  # GETs served, failed ones included
        self.failing = False  # answer 503 instead of the keys
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                jwks.fetches += 1
                if jwks.failing:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps(jwks.document()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def document(self):
        out = []
        for kid in sorted(self.published):
            alg, key = self.keys[kid]
            algo = jwt.get_algorithm_by_name(alg)
            jwk = json.loads(algo.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": alg, "use": "sig"})
            out.append(jwk)
        return {"keys": out}

    def add(self, kid, alg, key):
        self.keys[kid] = (alg, key)
        self.published.add(kid)

    def token(self, kid, account, **claims):
        alg, key = self.keys[kid]
        return jwt.encode({"sub": account, "exp": int(time.time()) + 600, **claims}, key, algorithm=alg, headers={"kid": kid})


def edge_settings(aws, jwks_url=None, **overrides):
    settings = {
        **aws.edge_vars(),
        "JWT_SECRET": JWT_SECRET,
        "RATE_LIMITER_ENABLED": "true",
        "CORS_ALLOWED_ORIGINS": ORIGIN,
        "JWKS_REFRESH_INTERVAL_SECONDS": "1",
    }
    if jwks_url:
        settings["JWT_JWKS_URL"] = jwks_url
    settings.update(overrides)
    return settings


class Edge:
    def __init__(self, url):
        self.url = url

    def call(self, method, path, token=None, json_body=None, headers=None, **kw):
        h = dict(headers or {})
        if token:
            h["authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + BASE + path, json=json_body, headers=h, timeout=30, **kw)


def start_edge(name, settings):
    port = stack.free_port()
    vars_file = LOGS / f"{name}.vars"
    vars_file.parent.mkdir(parents=True, exist_ok=True)
    stack.write_vars(vars_file, settings)
    return stack.start_edge(port, vars_file, LOGS / f"{name}.log"), Edge(f"http://127.0.0.1:{port}")


def token(account, secret=JWT_SECRET, exp_in=600, **claims):
    body = {"sub": account, **claims}
    if exp_in is not None:
        body["exp"] = int(time.time()) + exp_in
    return jwt.encode(body, secret, algorithm="HS256")


def account():
    """A fresh account per test, so tests do not see each other's backlog."""
    return f"creator-{uuid.uuid4().hex[:12]}"


class Emulator:
    """Reads what the edge wrote, with the emulator's root key."""

    def __init__(self, aws):
        self.aws = aws
        self.sqs = prov.client("sqs", aws.endpoint)
        self.ddb = prov.client("dynamodb", aws.endpoint)
        self._seen = {}

    def queue_messages(self):
        """Every message the queue has received so far, by id (a campaign's reference by
        the campaign's id, a pause or resume by "control:account"), read and deleted."""
        while True:
            r = self.sqs.receive_message(QueueUrl=self.aws.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0)
            batch = r.get("Messages", [])
            if not batch:
                return self._seen
            for m in batch:
                body = json.loads(m["Body"])
                key = body.get("id") or body.get("campaign") or f"{body.get('control')}:{body.get('creatorId')}"  # a pause or resume
                self._seen.setdefault(key, []).append({"body": body, "attributes": m.get("MessageAttributes", {})})
                self.sqs.delete_message(QueueUrl=self.aws.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def item(self, creator, message_id):
        return self.ddb.get_item(TableName=self.aws.table, Key={"creatorId": {"S": creator}, "messageId": {"S": message_id}}, ConsistentRead=True).get("Item")

    def items(self, creator):
        r = self.ddb.query(TableName=self.aws.table, KeyConditionExpression="creatorId = :c", ExpressionAttributeValues={":c": {"S": creator}}, ConsistentRead=True)
        return [i for i in r["Items"] if not i["messageId"]["S"].startswith("#")]

    def campaign(self, creator, campaign_id):
        return self.item(creator, f"#campaign#{campaign_id}")

    def claim(self, creator, key):
        """The idempotency record of `key`."""
        return self.item(creator, f"#idem#{key}")


class Backend:
    """What stands behind the edge: Redis, the gateway stub and the native worker, on
    the edge's emulator. The source of failed messages and backlog counts for the edge's
    routes, as in production. Recipients containing `fail-` are refused for good (400).
    The worker runs only inside `running()`, since other tests read the queue."""

    def __init__(self, aws):
        self.aws = aws
        self.redis_port, gw_port = stack.free_port(), stack.free_port()
        self.parts = [stack.start_redis(self.redis_port, LOGS / "edge-backend-redis.log"),
                      stack.start_gateway_stub(gw_port, LOGS / "edge-backend-gateway.log")]
        self.gateway = f"http://127.0.0.1:{gw_port}"
        self.ddb = prov.client("dynamodb", aws.endpoint)
        self.started = False
        requests.post(self.gateway + "/_control/failures", json={"recipientPattern": "fail-", "status": 400}, timeout=10).raise_for_status()
        self.settings = {
            **stack.worker_settings(aws.worker_env(), self.redis_port, self.gateway, "edge"),
            "RATE_LIMIT_MAX": "1000", "RATE_LIMIT_WINDOW": "1s", "SQS_WAIT_SECONDS": "1", "METRICS_ENABLED": "false",
        }

    @contextmanager
    def running(self):
        abandon_waiting(self.ddb, self.aws.table)  # other tests' messages are not this worker's to send
        log = LOGS / "edge-backend-worker.log"
        part = stack.start_worker(self.settings, log, stack.free_port())
        try:
            if not self.started:
                # The first start finds Redis empty and rebuilds (from nothing, after the
                # line above), which sets the floor a lost schedule needs: no send before
                # the loss plus a window (an hour under the tests' one-an-hour limit).
                # This Redis is new, not lost: nothing was ever sent through it.
                wait_for(lambda: "rebuilt from the ledger" in log.read_text(), 30, "the first start's rebuild")
                lost = self.redis_cli("--scan", "--pattern", "*lost_*").split()
                if lost:
                    self.redis_cli("DEL", *lost)
                self.started = True
            yield self
        finally:
            part.stop()

    def redis_cli(self, *args) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], check=True, capture_output=True, text=True).stdout

    def limit(self, creator, spec):
        """A per-account limit override, "<max> <window_ms> <burst>"."""
        self.redis_cli("HSET", "edge:limits", creator, spec)

    def delivered(self, creator):
        return [d for d in requests.get(self.gateway + "/deliveries", timeout=10).json() if d["accountId"] == creator]

    def stop(self):
        for p in reversed(self.parts):
            p.stop()


def wait_for(check, timeout, what):
    """Polls `check` until it returns something true; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


WINDOW_MS = 2000
MAX = 10
MARGIN_MS = 100  # against delivery jitter on a loaded 2-core machine (5% of the compressed window)
SPACING_MS = WINDOW_MS / MAX  # the margin is added once per MAX sends, not to each spacing
# The limit as the edge and the workers are given it (each its own settings).
RATE_LIMIT = {"RATE_LIMIT_MAX": str(MAX), "RATE_LIMIT_WINDOW": f"{WINDOW_MS}ms"}
CLAIM_LEAD_MS = 200  # the worker's default: a message is taken this long before its slot
MAX_LEAD_MS = 1000  # the longest a message is taken before its slot (worker-native/src/schedule.rs)
JITTER_MS = 300  # how late a delivery may reach the gateway after its slot on a loaded machine


def figure(name, **values):
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "figures.jsonl", "a") as f:
        f.write(json.dumps({"test": name, **values}) + "\n")


def ms(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000


def span_bound(n, window_ms, margin_ms):
    """The longest an account's n sends may take against the ideal (n - 1) spacings:
    the margins the limit adds (one per MAX sends), plus how late a send may reach the
    gateway on a loaded machine (JITTER_MS, as every other test allows: the first on
    time, the last that late). Only for a window whose spacing is longer than JITTER_MS
    (not the harness's own 2 s: its caller names its window). CI runs saw the slowest account 159 and 240 ms over the
    ideal and its margins; a slot left idle costs a whole spacing, more than JITTER_MS
    whenever the spacing is longer, so it still fails."""
    ideal = (n - 1) * window_ms / MAX
    assert window_ms / MAX > JITTER_MS, "an idle slot must cost more than the jitter allowed"
    return (ideal + (n - 1) // MAX * margin_ms + JITTER_MS) / ideal


def fans(tag, n):
    return [f"{tag}-fan-{i}" for i in range(n)]


class System:
    def __init__(self):
        self.parts = []
        LOGS.mkdir(parents=True, exist_ok=True)
        self.aws_port = stack.free_port()
        self.parts.append(stack.start_ministack(self.aws_port, LOGS / "worker-ministack.log"))
        self.aws = prov.provision(f"http://127.0.0.1:{self.aws_port}", prefix="wk")
        self.redis_port = stack.free_port()
        self.redis_dir = LOGS / "redis-data"
        self.redis = stack.start_redis(self.redis_port, LOGS / "redis.log", self.redis_dir)
        self.gw_port = stack.free_port()
        self.parts.append(stack.start_gateway_stub(self.gw_port, LOGS / "gateway-stub.log"))
        self.gw = f"http://127.0.0.1:{self.gw_port}"
        self.sqs = prov.client("sqs", self.aws.endpoint)
        self.emulator = Emulator(self.aws)
        self.cloudwatch = prov.client("cloudwatch", self.aws.endpoint)
        self._edge = None

    def edge(self):
        """The edge the tests send through (started on first use; no API-call limit)."""
        if self._edge is None:
            # The workers' limit (`worker_env`), so that its estimates and its window
            # meter (`GET /status`) speak of the limit kept.
            part, self._edge = start_edge("edge-worker", edge_settings(self.aws, API_CALL_LIMITS="false", MAX_RECIPIENTS="10000", WEBHOOK_LOOPBACK="true", **RATE_LIMIT))
            self.parts.append(part)
        return self._edge

    def send(self, account, recipients, priority=5, content="hello", edge=None):
        """Queues one message per recipient through the edge (one request); their ids."""
        body = {"content": content, "priority": priority}
        body.update({"recipientIds": recipients} if len(recipients) > 1 else {"recipientId": recipients[0]})
        r = (edge or self.edge()).call("POST", "/send", token(account), body)
        assert r.status_code == 202, r.text
        a = r.json()
        return [m["messageId"] for m in a["messages"]] if "messages" in a else [a["messageId"]]

    def capture(self, ids):
        """Takes the edge's queue messages for `ids` off the queue (no worker may be
        running), to hand them to the worker again as SQS would: [(body, attributes)]."""
        wanted, got = set(ids), {}
        deadline = time.monotonic() + 20
        while wanted - set(got):
            assert time.monotonic() < deadline, f"{len(wanted - set(got))} queue messages not found"
            r = self.sqs.receive_message(QueueUrl=self.aws.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1)
            for m in r.get("Messages", []):
                b = json.loads(m["Body"])
                mid = b.get("id") or b.get("campaign")  # a message, or a campaign (by its id)
                if mid in wanted:
                    got[mid] = (m["Body"], {k: {"DataType": v["DataType"], "StringValue": v["StringValue"]} for k, v in m.get("MessageAttributes", {}).items()})
                    self.sqs.delete_message(QueueUrl=self.aws.queue_url, ReceiptHandle=m["ReceiptHandle"])
                else:
                    self.sqs.change_message_visibility(QueueUrl=self.aws.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        return [got[i] for i in ids]

    def requeue(self, captured):
        """Puts captured messages back in one SendMessageBatch (so they arrive together)."""
        entries = [{"Id": str(i), "MessageBody": body, "MessageAttributes": attrs} for i, (body, attrs) in enumerate(captured)]
        r = self.sqs.send_message_batch(QueueUrl=self.aws.queue_url, Entries=entries)
        assert not r.get("Failed"), r

    def queue_empty(self):
        a = self.sqs.get_queue_attributes(QueueUrl=self.aws.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]) == 0

    def restart_redis(self, down_for):
        """Stops Redis for `down_for` seconds; returns (stopped, started) in epoch ms."""
        self.redis.stop()
        stopped = time.time() * 1000
        time.sleep(down_for)
        started = time.time() * 1000
        self.redis = stack.start_redis(self.redis_port, LOGS / "redis.log", self.redis_dir)
        return stopped, started

    def redis_count(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], capture_output=True, text=True, check=True).stdout.strip()
        return int(out or 0)

    def worker_env(self, prefix, **extra):
        return {
            **stack.worker_settings(self.aws.worker_env(), self.redis_port, self.gw, prefix),
            "GATEWAY_TIMEOUT": "2s",
            **RATE_LIMIT,
            "RATE_LIMIT_MARGIN": f"{MARGIN_MS}ms",
            "RETRY_BASE_DELAY": "100ms",
            "RETRY_MAX_DELAY": "400ms",
            "LEASE_TIMEOUT": "3s",
            "METRICS_INTERVAL": "1s",
            "ENVIRONMENT": prefix,
            "SHUTDOWN_GRACE": "5s",
            "SQS_WAIT_SECONDS": "2",
            **extra,
        }

    def start_workers(self, prefix, n=1, **extra):
        return [stack.start_worker(self.worker_env(prefix, **extra), LOGS / f"worker-{prefix}-{i}.log", stack.free_port()) for i in range(n)]

    def deliveries(self, accounts=None):
        d = requests.get(self.gw + "/deliveries", timeout=10).json()
        return [x for x in d if accounts is None or x["accountId"] in accounts]

    def refused(self, pattern):
        return [x for x in requests.get(self.gw + "/refused", timeout=10).json() if pattern in x["recipientId"]]

    def wait_delivered(self, ids, timeout):
        ids = set(ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = {d["messageId"] for d in self.deliveries()}
            if ids <= got:
                return
            time.sleep(0.2)
        missing = ids - {d["messageId"] for d in self.deliveries()}
        raise AssertionError(f"{len(missing)} of {len(ids)} messages not delivered within {timeout}s")

    def control(self, method, path, body=None):
        requests.request(method, self.gw + path, json=body, timeout=10).raise_for_status()

    def metric(self, environment, name, stat="Sum", since=None):
        """Datapoints of one metric of `environment` (1 s periods), the stat of each."""
        start = since if since is not None else time.time() - 600
        r = self.cloudwatch.get_metric_statistics(
            Namespace="Huntaze/OnlyFans", MetricName=name, Dimensions=[{"Name": "Environment", "Value": environment}],
            StartTime=datetime.fromtimestamp(start, timezone.utc), EndTime=datetime.fromtimestamp(time.time() + 60, timezone.utc),
            Period=1, Statistics=[stat])
        return [p[stat] for p in sorted(r["Datapoints"], key=lambda p: p["Timestamp"])]

    def percentiles(self, environment, name, stats, since):
        """Percentiles (e.g. "p99") of one metric of `environment` over everything since
        `since`, as one datapoint: the period is longer than the time since the epoch, to
        which the emulator aligns periods. None for one CloudWatch cannot compute (a
        statistic set whose Minimum and Maximum differ)."""
        now = time.time()
        r = self.cloudwatch.get_metric_statistics(
            Namespace="Huntaze/OnlyFans", MetricName=name, Dimensions=[{"Name": "Environment", "Value": environment}],
            StartTime=datetime.fromtimestamp(since, timezone.utc), EndTime=datetime.fromtimestamp(now + 60, timezone.utc),
            Period=60 * (int(now) // 60 + 2), ExtendedStatistics=stats)
        [point] = r["Datapoints"] or [{}]
        return {s: point.get("ExtendedStatistics", {}).get(s) for s in stats}

    def wait_metrics(self, environment, expected, timeout=20):
        """Polls until each metric's total over its flushes is as expected: {(name, stat): value}."""
        def totals():
            return {k: sum(self.metric(environment, *k)) for k in expected}
        deadline = time.monotonic() + timeout
        got = totals()
        while got != expected and time.monotonic() < deadline:
            time.sleep(0.5)
            got = totals()
        assert got == expected, f"metrics of {environment}: {got}, want {expected}"

    def abandon_waiting(self):
        """Cancels, straight in the ledger, every message still waiting (the tests' own
        cleanup): a test that stops its workers with messages left would otherwise hand
        them to the next test's workers, whose first start rebuilds their schedule from
        the ledger's waiting index (one schedule per ledger is what production runs)."""
        return abandon_waiting(self.emulator.ddb, self.aws.table)

    def stop(self):
        for p in reversed(self.parts):
            p.stop()
        self.redis.stop()


def account_counts(status):
    """`GET /status`'s account without its rolling window (`window`: times that move
    with the clock), for an assertion of its counters and state as a whole."""
    return {k: v for k, v in status["account"].items() if k != "window"}


def plain(log_text):
    """A worker's log without its colours, for its fields to be read (`key=value`)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", log_text)


def given_back(logs):
    """What the workers of these logs gave back unsent because they themselves were
    late: the ids of sends woken past their deadline (the process stalled), one per
    time, and how many claims came back from the ledger after their slot. Each costs its
    account a slot: the limit requires it, so a test of idle slots excuses it, as the
    history checker does."""
    ids, late = [], 0
    for log in logs:
        text = plain(log.read_text(errors="replace"))
        ids += re.findall(r"woken past the send deadline.* id=(\S+)", text)
        late += sum(int(n) for n in re.findall(r"claim slower than the take's lead.* late=(\d+)", text))
    return ids, late


def stop_all(workers, sig=signal.SIGTERM):
    for w in workers:
        w.stop(sig)


def rebuilds(prefix, workers):
    """The rebuilds the workers started with `prefix` logged: "rebuilt from the ledger
    messages=45 added=45 pages=16 ms=53" (less the log's colours), as dicts."""
    logs = plain("".join((LOGS / f"worker-{prefix}-{i}.log").read_text() for i in range(workers)))
    return [{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)} for line in logs.splitlines() if "rebuilt from the ledger" in line]


def summary(system, account):
    """The account's summary counters as stored (not clamped at 0 as the API reads them)."""
    item = system.emulator.item(account, "#summary") or {}
    return {k: int(item[k]["N"]) for k in ("queued", "sent", "failed") if k in item}


def own_emulator(log_name):
    """The body of a module-scoped fixture giving a module an emulator of its own: its
    URL, the emulator stopped after the module."""
    port = stack.free_port()
    part = stack.start_ministack(port, LOGS / log_name)
    yield f"http://127.0.0.1:{port}"
    part.stop()


def wait_statuses(system, account, count, status="sent", timeout=30):
    def done():
        items = system.emulator.items(account)
        return len(items) == count and all(i["status"]["S"] == status for i in items)
    wait_for(done, timeout, f"{count} items of {account} {status}")


def campaign_counts(system, account, cid, total, canceled):
    """A campaign's counts as its ledger items say (by status; its messages without an
    item count as canceled once it is canceled, as queued before): what
    `GET /campaigns/{id}` must show, each counter on its own."""
    items = [i for i in system.emulator.items(account) if i.get("campaignId", {}).get("S") == cid]
    by = {}
    for i in items:
        by[i["status"]["S"]] = by.get(i["status"]["S"], 0) + 1
    unwritten = total - len(items)
    return {
        "sent": by.get("sent", 0),
        "failed": by.get("failed", 0),
        "canceled": by.get("canceled", 0) + (unwritten if canceled else 0),
        "queued": by.get("queued", 0) + by.get("sending", 0) + (0 if canceled else unwritten),
    }


def shard_of(account: str, shards: int) -> int:
    """The worker's shard of an account (`shard_of` in worker-native/src/schedule.rs):
    FNV-1a of its id, then MurmurHash3's finalizer."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in account.encode():
        h = ((h ^ b) * 0x100000001B3) & mask
    for mul in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h ^= h >> 33
        h = (h * mul) & mask
    h ^= h >> 33
    return h % shards


def epoch_key(prefix: str, account: str, shards: int) -> str:
    """The key that routes `account`'s shard on a cluster (its shard's epoch)."""
    return f"{{{prefix}:{shard_of(account, shards)}}}:epoch"


def abandon_waiting(ddb, table: str) -> int:
    """Marks every waiting item of `table` canceled (messages) or rested (accounts), so
    that no later schedule adopts it; returns how many."""
    done = 0
    for shard in [f"{kind}{d:x}" for kind in "wc" for d in range(16)]:  # messages' shards, campaigns'
        start = None
        while True:
            kw = {"ExclusiveStartKey": start} if start else {}
            r = ddb.query(TableName=table, IndexName="waiting-index", KeyConditionExpression="waitShard = :w", ExpressionAttributeValues={":w": {"S": shard}}, **kw)
            for item in r["Items"]:
                key = {"creatorId": item["creatorId"], "messageId": item["messageId"]}
                if item["messageId"]["S"] == "#summary":
                    ddb.update_item(TableName=table, Key=key, UpdateExpression="REMOVE waitShard")
                else:
                    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #st = :c REMOVE waitShard", ExpressionAttributeNames={"#st": "status"},
                                    ExpressionAttributeValues={":c": {"S": "canceled"}})
                done += 1
            start = r.get("LastEvaluatedKey")
            if not start:
                break
    return done
