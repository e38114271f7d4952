"""The whole path, from a JWT to a delivered message, against the system started the way
the README's run command starts it (fast limit, 10 per 2 s): edge under `wrangler dev`,
one native worker, Redis, the AWS emulator and the stand-in gateway."""

import concurrent.futures
import time

import pytest
import requests

from harness import JITTER_MS, LOGS, figure, max_in_window, ms, wait_for
from devstack.mint_jwt import mint
from devstack.system import LocalSystem, Ports

WINDOW_MS, MAX = 2000, 10
SPACING_MS = WINDOW_MS / MAX
MARGIN_MS = 250  # the run command's demo limit (devstack/system.py): added once per MAX sends


@pytest.fixture(scope="module")
def system():
    s = LocalSystem(Ports.free(), LOGS / "system", fast=True)
    s.start(say=lambda m: None)
    yield s
    s.stop()


class Client:
    def __init__(self, system, account):
        self.api = system.api
        self.h = {"authorization": "Bearer " + mint(account, system.edge_settings["JWT_SECRET"], 3600)}

    def post(self, path, body=None):
        return requests.post(self.api + path, json=body, headers=self.h, timeout=30)

    def get(self, path, **kw):
        return requests.get(self.api + path, headers=self.h, timeout=30, **kw)


def deliveries(system, account):
    return [d for d in requests.get(system.gateway + "/deliveries", timeout=10).json() if d["accountId"] == account]


def test_three_accounts_from_jwt_to_delivery(system):
    tag = str(int(time.time()))
    a, b, c = (Client(system, f"{n}-{tag}") for n in ("acct-a", "acct-b", "acct-c"))
    # The worker is stopped while the messages are accepted, so every one of them is
    # waiting when it starts: priority order is then fully observable.
    assert system.stop_worker() == 0, "worker exits 0 on SIGTERM"
    priorities = [(i * 7) % 10 + 1 for i in range(25)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        a_answers = list(pool.map(lambda p: a.post("/send", {"recipientId": f"fan-{p[0]}", "content": "hi", "priority": p[1]}).json(), enumerate(priorities)))
    b_ids = [b.post("/send", {"recipientId": f"fan-{i}", "content": "hi"}).json()["messageId"] for i in range(5)]
    mass = c.post("/send", {"recipientIds": [f"fan-{i}" for i in range(20)], "content": "to all", "priority": 2}).json()
    c_ids = [m["messageId"] for m in mass["messages"]]
    a_ids = [x["messageId"] for x in a_answers]
    prio = {x["messageId"]: p for x, p in zip(a_answers, priorities)}

    status = a.get("/status").json()
    # All of it waits in SQS (the mass message as one campaign): the account's backlog
    # counts what the worker has taken on.
    assert status["queue"]["depth"] >= 31 and status["account"]["backlog"] == 0
    assert status["processing"]["lastProcessedAt"] is None
    watched = a_ids[-1]
    assert a.get(f"/{watched}").json()["status"] == "queued"

    system.start_worker(say=lambda m: None)
    started = time.time() * 1000
    seen_statuses, drains = set(), []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        seen_statuses.add(a.get(f"/{watched}").json()["status"])
        s = a.get("/status").json()
        drains.append((s["account"]["backlog"], s["processing"]["estimatedTimeSeconds"], s["processing"]["lastProcessedAt"]))
        if len(deliveries(system, f"acct-a-{tag}")) == 25 and s["account"]["backlog"] == 0:
            break
        time.sleep(0.3)

    got = {n: deliveries(system, f"{n}-{tag}") for n in ("acct-a", "acct-b", "acct-c")}
    for name, ids in (("acct-a", a_ids), ("acct-b", b_ids), ("acct-c", c_ids)):
        delivered = [d["messageId"] for d in got[name]]
        assert sorted(delivered) == sorted(ids), f"{name}: every message delivered exactly once"
        assert max_in_window([ms(d["receivedAt"]) for d in got[name]], WINDOW_MS) <= MAX
    a_order = [prio[d["messageId"]] for d in got["acct-a"]]
    assert a_order == sorted(priorities), f"priority order within the account: {a_order}"
    b_first = min(ms(d["receivedAt"]) for d in got["acct-b"]) - started
    c_span = max(ms(d["receivedAt"]) for d in got["acct-c"]) - min(ms(d["receivedAt"]) for d in got["acct-c"])
    figure("system_three_accounts", b_first_delivery_ms=round(b_first), c_span_ms=round(c_span), c_ideal_ms=round(19 * SPACING_MS + MARGIN_MS))
    assert b_first < 1500, "B is not held back behind A's backlog"
    assert c_span <= 1.1 * (19 * SPACING_MS + MARGIN_MS), "C's mass message goes at C's own rate"

    assert "sent" in seen_statuses and a.get(f"/{watched}").json()["status"] == "sent"
    backlogs = [d[0] for d in drains]
    peak = backlogs.index(max(backlogs))
    assert 0 < backlogs[peak] <= 25 and drains[peak][1] > 0 and backlogs[-1] == 0 and drains[-1][1] == 0, backlogs
    after = backlogs[peak:]
    assert all(x >= y for x, y in zip(after, after[1:])), f"once taken on, the backlog only falls: {backlogs}"
    assert len({d[2] for d in drains if d[2]}) > 2, "lastProcessedAt moves"


def test_failed_for_good_then_retried(system):
    user = Client(system, f"acct-f-{int(time.time())}")
    requests.post(system.gateway + "/_control/failures", json={"recipientPattern": "blocked-fan", "status": 403}, timeout=10).raise_for_status()
    try:
        mid = user.post("/send", {"recipientId": "blocked-fan", "content": "will fail"}).json()["messageId"]
        deadline = time.monotonic() + 20
        while user.get(f"/{mid}").json()["status"] != "failed":
            assert time.monotonic() < deadline, "message never failed"
            time.sleep(0.2)
        failed = user.get("/failed").json()
        [entry] = failed["failedMessages"]
        assert entry["id"] == mid and "403" in entry["error"] and entry["attempts"] == 1
    finally:
        requests.delete(system.gateway + "/_control/failures", timeout=10)
    assert user.post(f"/{mid}/retry").status_code == 200
    deadline = time.monotonic() + 20
    while user.get(f"/{mid}").json()["status"] != "sent":
        assert time.monotonic() < deadline, "retried message never sent"
        time.sleep(0.2)
    second = user.post(f"/{mid}/retry")
    assert (second.status_code, second.json()["code"]) == (409, "not_retryable")
    assert user.get("/failed").json()["failedMessages"] == []


def test_the_window_meter_shows_the_sends_the_gateway_got(system):
    """`GET /status`'s window: while a campaign of 16 goes at 10 per 2 s, the sends it
    counts in the window ending now never pass the limit; once done, it holds all 16
    (it keeps two windows' worth and two more), each within the harness's jitter of when
    the gateway got it; the count in the window is the gateway's for the same window
    (give or take a send at its edges); a window later it is 0 and the next send may go
    at once."""
    account = f"acct-w-{int(time.time())}"
    user = Client(system, account)
    assert user.get("/status").json()["account"]["window"]["sentInWindow"] == 0
    user.post("/send", {"recipientIds": [f"fan-{i}" for i in range(16)], "content": "metered"}).raise_for_status()
    counts, deadline = [], time.monotonic() + 30
    while len(deliveries(system, account)) < 16:
        assert time.monotonic() < deadline, f"only {len(deliveries(system, account))} of 16 delivered"
        w = user.get("/status").json()["account"]["window"]
        assert (w["limit"], w["windowMs"]) == (MAX, WINDOW_MS)
        counts.append(w["sentInWindow"])
        time.sleep(0.1)
    assert max(counts) <= MAX and max(counts) >= 5, counts
    got = sorted(ms(d["receivedAt"]) for d in deliveries(system, account))
    status = wait_for(lambda: (s := user.get("/status").json()) and len(s["account"]["window"]["recentSends"]) == 16 and s, 10, "every send recorded")
    w, now = status["account"]["window"], ms(status["timestamp"])
    recent = [ms(t) for t in w["recentSends"]]
    assert recent == sorted(recent)
    for mine, theirs in zip(recent, got):
        assert abs(mine - theirs) < JITTER_MS, (w["recentSends"], got)
    surely = sum(1 for t in got if now - WINDOW_MS + JITTER_MS < t <= now)
    maybe = sum(1 for t in got if now - WINDOW_MS - JITTER_MS < t <= now + JITTER_MS)
    assert surely <= w["sentInWindow"] <= maybe, (w, surely, maybe)
    time.sleep(WINDOW_MS / 1000 + 0.5)
    later = user.get("/status").json()
    assert later["account"]["window"]["sentInWindow"] == 0
    assert ms(later["account"]["window"]["nextSendAt"]) <= ms(later["timestamp"])


def test_worker_stopped_mid_run_loses_nothing(system):
    account = f"acct-s-{int(time.time())}"
    user = Client(system, account)
    ids = [user.post("/send", {"recipientId": f"fan-{i}", "content": "x"}).json()["messageId"] for i in range(15)]
    time.sleep(0.8)
    assert system.stop_worker() == 0
    partial = len(deliveries(system, account))
    assert 0 < partial < 15
    system.start_worker(say=lambda m: None)
    deadline = time.monotonic() + 30
    while len(deliveries(system, account)) < 15:
        assert time.monotonic() < deadline, f"only {len(deliveries(system, account))} of 15 delivered"
        time.sleep(0.2)
    assert sorted(d["messageId"] for d in deliveries(system, account)) == sorted(ids)


def test_the_run_command_speaks_the_vendors_protocol_when_asked():
    """`scripts/run.sh --gateway onlyfansapi`: the same system, the worker speaking
    OnlyFansAPI.com's protocol to the stand-in vendor; a message and a small campaign
    from a JWT to the vendor, each once, at the vendor's path with its API key."""
    s = LocalSystem(Ports.free(), LOGS / "system-vendor", fast=True, vendor=True)
    s.start(say=lambda m: None)
    try:
        tag = str(int(time.time()))
        client = Client(s, f"vendor-{tag}")
        one = client.post("/send", {"recipientId": "fan-0", "content": "hi"}).json()["messageId"]
        mass = [m["messageId"] for m in client.post("/send", {"recipientIds": ["fan-1", "fan-2", "fan-3"], "content": "to all"}).json()["messages"]]
        deadline = time.monotonic() + 30
        while len(deliveries(s, f"vendor-{tag}")) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        got = deliveries(s, f"vendor-{tag}")
    finally:
        s.stop()
    assert sorted(d["messageId"] for d in got) == sorted([one, *mass]), "each once, its id as the idempotency key"
    assert all(d["path"] == f"/api/vendor-{tag}/chats/{d['recipientId']}/messages" and d["authorization"] == "Bearer local-vendor-key" for d in got)
