"""Faults in every dependency, with real processes: the AWS emulator behind a
fault-injecting proxy (500s, throttling, slow answers, dropped connections) for the
edge and for the workers; the gateway stub told to hang, answer slowly, 429 with and
without `Retry-After`, and fail in bursts; Redis connections killed (`CLIENT KILL`) and
Redis stalled (`DEBUG SLEEP`) mid-run; a worker stopped (`SIGSTOP`) past its lease and
resumed. For each: no message lost, duplicates counted and within their bound, no
rolling window over the limit (refused sends count: they reached the gateway), the
edge's 503 without AWS text or secret, and `/readyz` telling the truth meanwhile.
Figures go to target/e2e-logs/figures.jsonl."""

import re
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests

from harness import LOGS, MAX, System, WINDOW_MS, account, edge_settings, fans, figure, given_back, plain, max_in_window, ms, start_edge, stop_all, summary, token, wait_for as wait_until, wait_statuses
from devstack import stack
from devstack.faultproxy import FaultProxy

# What an answer of the edge must never carry, whatever AWS answered.
AWS_WORDS = ("amazonaws", "InternalFailure", "Throttling", "Rate exceeded", "injected", "__type", "x-amz")


@pytest.fixture(scope="module")
def system():
    s = System()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def nothing_left_waiting(system):
    """What a test leaves waiting is not the next test's to send."""
    yield
    system.abandon_waiting()


@pytest.fixture
def proxy(system):
    p = FaultProxy(system.aws.endpoint)
    yield p
    p.stop()


class Worker:
    """A worker process and its health port."""

    def __init__(self, system, prefix, i, **env):
        self.port = stack.free_port()
        self.part = stack.start_worker(system.worker_env(prefix, **env), LOGS / f"worker-{prefix}-{i}.log", self.port)

    def ready(self):
        """`GET /readyz`: (status, body), or (None, None) when it does not answer within 2 s."""
        try:
            r = requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
            return r.status_code, r.json()
        except requests.RequestException:
            return None, None


class ReadyzWatch:
    """Polls a worker's `/readyz` every 200 ms in the background: what it said, when."""

    def __init__(self, worker):
        self.seen, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
        self.thread.start()

    def _run(self, worker):
        while not self.stop.is_set():
            status, body = worker.ready()
            self.seen.append((time.monotonic(), status, body))
            time.sleep(0.2)

    def between(self, start, end):
        self.stop.set()
        self.thread.join()
        return [(s, b) for t, s, b in self.seen if start <= t <= end]


def outcome(system, accounts, ids, name, **extra):
    """Checks and records a run: every id delivered, the duplicates, the worst window
    (every send that reached the gateway, refused ones included)."""
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    refused = [r for r in requests.get(system.gw + "/refused", timeout=10).json() if any(r["recipientId"].startswith(a) for a in accounts)]
    def sends(a):
        return [ms(d["receivedAt"]) for d in got if d["accountId"] == a] + [ms(r["receivedAt"]) for r in refused if r["recipientId"].startswith(a)]
    worst = max(max_in_window(sends(a), WINDOW_MS) for a in accounts)
    duplicates = len(delivered) - len(set(delivered))
    figure(name, messages=len(ids), duplicates=duplicates, refused=len(refused), worst_window_count=worst, **extra)
    assert set(delivered) == set(ids), f"{len(set(ids) - set(delivered))} messages lost"
    assert worst <= MAX, f"{worst} sends in a window"
    return duplicates


def test_the_edge_answers_503_without_aws_text_when_aws_fails(aws):
    """500s, throttling and dropped connections on every AWS call of the edge: 503
    `upstream_unavailable`, no AWS text, no secret; slow answers: answered, late; and
    once AWS is back, 202."""
    proxy = FaultProxy(aws.endpoint)
    part, edge = start_edge("edge-aws-faults", edge_settings(aws, AWS_ENDPOINT_URL=proxy.url, API_CALL_LIMITS="false"))
    secrets = [aws.secret_access_key, aws.worker_secret]
    seen = {}
    try:
        for mode in ("error", "throttle", "drop"):
            tok = token(account())  # a fresh account: nothing of it cached in the isolate
            proxy.clear()
            proxy.fail("", mode=mode)  # every call
            for method, path, body in (("POST", "/send", {"recipientId": "fan", "content": "x"}), ("GET", "/status", None), ("GET", "/failed", None)):
                r = edge.call(method, path, tok, body)
                seen[(mode, path)] = r.status_code
                assert (r.status_code, r.json()["code"]) == (503, "upstream_unavailable"), f"{mode} {path}: {r.status_code} {r.text}"
                assert not any(w.lower() in r.text.lower() for w in AWS_WORDS), f"{mode} {path}: {r.text}"
                assert not any(s in r.text for s in secrets)
                assert not any(w.lower() in str(r.headers).lower() for w in AWS_WORDS[:4])
        proxy.clear()
        proxy.fail("", mode="delay", delay=1.5, count=4)
        started = time.monotonic()
        r = edge.call("POST", "/send", tok, {"recipientId": "fan", "content": "slow"})
        slow = time.monotonic() - started
        assert r.status_code == 202 and slow >= 1.5, (r.status_code, slow)
        proxy.clear()
        assert edge.call("POST", "/send", tok, {"recipientId": "fan", "content": "back"}).status_code == 202
    finally:
        part.stop()
        proxy.stop()
    figure("edge_aws_faults", answers={f"{m} {p}": s for (m, p), s in seen.items()}, slow_answer_s=round(slow, 2))


def test_aws_faults_under_the_workers_lose_nothing_and_readyz_tells(system, proxy):
    """The workers' AWS calls fail while they send: SQS down (every call 500) for 3 s,
    then receives throttled and dropped, then DynamoDB transactions (claims, outcomes)
    throttled and slowed past the claim lead. Nothing lost, nothing twice, the limit
    kept, the ledger exact; `/readyz` 503 with `sqs: false` while SQS is down, 200
    after."""
    accounts = [f"awsf-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    workers = [Worker(system, "awsf", i, AWS_ENDPOINT_URL=proxy.url) for i in range(2)]
    try:
        ids = [i for a in accounts for i in system.send(a, fans(a, 25))]
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 8, 30, "deliveries under way")
        watch = ReadyzWatch(workers[0])
        proxy.fail(":sending", mode="delay", delay=1.2, count=3)  # claims slower than the lead
        proxy.fail("TransactWriteItems", mode="throttle", count=4)  # claims and outcomes
        down_from = time.monotonic()
        proxy.fail("AmazonSQS.", seconds=3)
        time.sleep(3.2)
        down_to = time.monotonic()
        proxy.fail("ReceiveMessage", mode="throttle", seconds=2)
        proxy.fail("ReceiveMessage", mode="drop", count=3)
        system.wait_delivered(ids, timeout=90)
        for a in accounts:
            wait_statuses(system, a, 25, timeout=40)
        time.sleep(1)
        during = watch.between(down_from + 1.2, down_from + 2.8)  # the SDK's own retries first, the rule's end
        after = watch.between(down_to + 1, time.monotonic())
    finally:
        stop_all([w.part for w in workers])
    hits = sorted({m for m, _ in proxy.hits})
    duplicates = outcome(system, accounts, ids, "worker_aws_faults", faults=hits)
    assert duplicates == 0
    assert {"error", "throttle", "drop", "delay"} <= set(hits), hits
    assert during and all(s == 503 and b["sqs"] is False for s, b in during), during
    assert after and after[-1][0] == 200, after[-3:]
    for a in accounts:
        assert summary(system, a) == {"queued": 0, "sent": 25, "failed": 0}


def test_gateway_faults_lose_nothing_and_keep_the_limit(system):
    """The gateway hangs past the timeout (the delivery reached it: sent again, a
    duplicate per hang, the documented bound), answers slowly, says 429 with and
    without `Retry-After`, and fails in a burst of 503s; `/readyz` stays 200 (the
    gateway is not the worker's to be ready for)."""
    tag = uuid.uuid4().hex[:6]
    accounts = [f"gwf{tag}-{i}" for i in range(5)]
    rules = [
        (accounts[0], {"status": 202, "delayMs": 2600, "count": 2}),  # hangs past GATEWAY_TIMEOUT (2 s)
        (accounts[1], {"status": 202, "delayMs": 800, "count": 4}),  # slow answers
        (accounts[2], {"status": 429, "count": 2}),  # 429 without Retry-After
        (accounts[3], {"status": 429, "retryAfter": 1, "count": 2}),
        (accounts[4], {"status": 503, "count": 5}),  # a burst of 5xx
    ]
    for pattern, rule in rules:
        system.control("POST", "/_control/failures", {"recipientPattern": pattern, **rule})
    workers = [Worker(system, "gwf", i, MAX_ATTEMPTS="8") for i in range(2)]
    try:
        watch = ReadyzWatch(workers[0])
        started = time.monotonic()
        ids = [i for a in accounts for i in system.send(a, fans(a, 12))]
        system.wait_delivered(ids, timeout=90)
        for a in accounts:
            wait_statuses(system, a, 12, timeout=40)
        readyz = watch.between(started, time.monotonic())
    finally:
        stop_all([w.part for w in workers])
        system.control("DELETE", "/_control/failures")
    duplicates = outcome(system, accounts, ids, "gateway_faults", hangs=2)
    refused = [r for r in system.refused("gwf" + tag)]
    timeouts = sum((LOGS / f"worker-gwf-{i}.log").read_text().count("gateway timed out: the message is tried again") for i in range(2))
    # Each hang reached the gateway and timed out in the worker: sent again, a second copy.
    assert duplicates == 2, f"{duplicates} sent twice: exactly one per hang past the timeout"
    assert timeouts == 2, f"{timeouts} timeouts logged for 2 hangs"
    assert sorted(r["status"] for r in refused) == [429] * 4 + [503] * 5, sorted(r["status"] for r in refused)
    assert readyz and all(s == 200 for s, _ in readyz), [s for s, _ in readyz]


def test_redis_connections_killed_and_redis_stalled(system):
    """`CLIENT KILL TYPE normal` twice and `DEBUG SLEEP 2` once while sending: the
    workers reconnect, nothing lost, nothing twice, the limit kept; `/readyz` says
    `redis: false` while Redis is stalled (each probe answers within its 1 s bound)."""
    accounts = [f"rdf-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    workers = [Worker(system, "rdf", i) for i in range(2)]
    cli = ["redis-cli", "-p", str(system.redis_port)]
    try:
        ids = [i for a in accounts for i in system.send(a, fans(a, 15))]
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 8, 30, "deliveries under way")
        for _ in range(2):
            subprocess.run([*cli, "CLIENT", "KILL", "TYPE", "normal"], check=True, capture_output=True)
            time.sleep(1)
        subprocess.run([*cli, "CLIENT", "KILL", "TYPE", "pubsub"], check=True, capture_output=True)
        watch = ReadyzWatch(workers[0])
        stalled_from = time.monotonic()
        subprocess.run([*cli, "DEBUG", "SLEEP", "2"], check=True, capture_output=True, timeout=10)
        stalled_to = time.monotonic()
        system.wait_delivered(ids, timeout=60)
        readyz = watch.between(stalled_from, time.monotonic())
    finally:
        stop_all([w.part for w in workers])
    duplicates = outcome(system, accounts, ids, "redis_faults")
    assert duplicates == 0
    assert any(s == 503 and b["redis"] is False for s, b in readyz[:4]), readyz[:6]
    assert readyz[-1][0] == 200
    assert stalled_to - stalled_from >= 1.9


HOLD_MS = 300


def test_a_worker_stopped_past_its_lease_then_resumed(system):
    """SIGSTOP a worker holding messages for longer than its lease (3 s), then SIGCONT:
    the other worker takes its messages over after the lease; the resumed one sends
    none of them off its slot (woken past their deadlines, it gives them back), so the
    limit holds, and what both sent is within what it held; its `/readyz` does not
    answer while it is stopped."""
    tag = uuid.uuid4().hex[:6]
    accounts = [f"stop{tag}-{i}" for i in range(6)]
    # The gateway holds each answer 300 ms: the stopped worker has deliveries in flight.
    system.control("POST", "/_control/failures", {"recipientPattern": f"stop{tag}", "status": 202, "delayMs": HOLD_MS})
    # The victim works alone until it is stopped: every lease held then is its own.
    victim, other = Worker(system, "stopw", 0), None
    try:
        ids = [i for a in accounts for i in system.send(a, fans(a, 15))]
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 10, 30, "deliveries under way")
        victim.part.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.time() * 1000
        held = system.redis_count("ZCARD", "stopw:leases")
        other = Worker(system, "stopw", 1)
        # Deliveries that reached the gateway before the stop and were answered after it
        # (the gateway holds each answer HOLD_MS): the stopped worker cannot record them,
        # and after their lease the other one sends them again (the lower bound).
        in_flight = [d for d in system.deliveries(set(accounts)) if stopped_at - HOLD_MS < ms(d["receivedAt"]) <= stopped_at]
        stopped_answer = victim.ready()
        time.sleep(4.5)
        victim.part.proc.send_signal(signal.SIGCONT)
        system.wait_delivered(ids, timeout=90)
        for a in accounts:
            wait_statuses(system, a, 15, timeout=40)
        resumed_answer = victim.ready()
    finally:
        stop_all([victim.part] + ([other.part] if other else []))
        system.control("DELETE", "/_control/failures")
    # Woken up, it gives back unsent what it took: each message waiting for its slot
    # (past its deadline now), or a whole batch whose claim was under way (its answer
    # came after the lead, or the claim was refused: the other worker sent it meanwhile).
    log = LOGS / "worker-stopw-0.log"
    stalled, late = given_back([log])
    gave_back = len(stalled) + late + sum(int(n) for n in re.findall(r"canceled or finished messages left unsent count=(\d+)", plain(log.read_text())))
    duplicates = outcome(system, accounts, ids, "sigstop", leases_at_stop=held, in_flight_at_stop=len(in_flight), given_back_on_resume=gave_back)
    # Each lease the stopped worker held ends one way: sent again by the other worker
    # after the lease (it was in flight: it reached the gateway, unanswered), given back
    # unsent on resume, or recorded on resume (its answer had come before the stop).
    assert gave_back, "the resumed worker gave back what it woke up to past its deadline"
    assert duplicates + gave_back <= held, f"{duplicates} sent twice and {gave_back} given back; {held} leases held by the stopped worker"
    assert len(in_flight) <= duplicates, f"{len(in_flight)} reached the gateway and were answered after the stop, {duplicates} sent again"
    assert stopped_answer == (None, None), stopped_answer
    assert resumed_answer[0] == 200
