"""Fixtures of the end-to-end suite: the AWS emulator (signature checking on), the edge
under `wrangler dev` (built beforehand; started without rebuilding), a JWKS server, and
helpers to mint tokens and to read back what reached SQS and the ledger."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devstack import provision as prov  # noqa: E402
from devstack import stack  # noqa: E402

JWT_SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
BASE = "/api/onlyfans/messaging"
ORIGIN = "https://app.example.com"
LOGS = Path(stack.ROOT) / "target" / "e2e-logs"


# Every secret handed to an edge or a worker is written here (devstack.stack), so that
# the last test can check that no log holds one (test_secrets.py).
os.environ["SECRETS_RECORD"] = str(LOGS / "secrets.list")


def pytest_sessionstart(session):
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)


def pytest_collection_modifyitems(session, config, items):
    """The check of the logs for secrets runs last, over what every other test wrote."""
    items.sort(key=lambda item: item.path.name == "test_secrets.py")


@pytest.fixture(scope="session")
def aws():
    port = stack.free_port()
    part = stack.start_ministack(port, LOGS / "ministack.log")
    try:
        yield prov.provision(f"http://127.0.0.1:{port}")
    finally:
        part.stop()


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


@pytest.fixture(scope="session")
def jwks():
    j = Jwks()
    yield j
    j.server.shutdown()


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


@pytest.fixture(scope="session")
def edge(aws, jwks):
    part, e = start_edge("edge", edge_settings(aws, jwks.url))
    yield e
    part.stop()


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


@pytest.fixture(scope="session")
def emulator(aws):
    return Emulator(aws)


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
        requests.post(self.gateway + "/_control/failures", json={"recipientPattern": "fail-", "status": 400}, timeout=10).raise_for_status()
        self.settings = {
            **stack.worker_settings(aws.worker_env(), self.redis_port, self.gateway, "edge"),
            "RATE_LIMIT_MAX": "1000", "RATE_LIMIT_WINDOW": "1s", "SQS_WAIT_SECONDS": "1", "METRICS_ENABLED": "false",
        }

    @contextmanager
    def running(self):
        part = stack.start_worker(self.settings, LOGS / "edge-backend-worker.log", stack.free_port())
        try:
            yield self
        finally:
            part.stop()

    def limit(self, creator, spec):
        """A per-account limit override, "<max> <window_ms> <burst>"."""
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "HSET", "edge:limits", creator, spec], check=True, capture_output=True)

    def delivered(self, creator):
        return [d for d in requests.get(self.gateway + "/deliveries", timeout=10).json() if d["accountId"] == creator]

    def stop(self):
        for p in reversed(self.parts):
            p.stop()


@pytest.fixture(scope="session")
def backend(aws):
    b = Backend(aws)
    yield b
    b.stop()


def wait_for(check, timeout, what):
    """Polls `check` until it returns something true; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)
