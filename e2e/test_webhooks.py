"""Webhooks (issue 25) through the edge under `wrangler dev` and the worker: an account
registers, lists, rotates and deletes its endpoints; a secret is shown once and never
again, nor logged; a URL that would reach inside our network is refused naming the
field; each account sees only its own. A test event reaches a real receiver on
loopback, where the reference library of Standard Webhooks (`standardwebhooks`, PyPI)
verifies every delivery: signed with the secret, then during a rotation with both the
old and the new one; a failed attempt is tried again with the same id after the
receiver's `Retry-After`; a 410 is not tried again and disables the endpoint until its
tenant enables it."""

import json
import re
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from harness import LOGS, System, account, token, wait_for
from devstack import stack

SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")


def create(edge, creator, body):
    return edge.call("POST", "/webhooks", token(creator), json_body=body)


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_an_endpoint_is_registered_listed_rotated_and_deleted(edge):
    creator, other = account(), account()
    r = create(edge, creator, {"url": "https://crm.example.com/hooks/of", "events": ["message.sent", "message.failed"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert SECRET.match(made["secret"]) and made["id"].startswith("ep_"), made
    assert (made["url"], made["events"]) == ("https://crm.example.com/hooks/of", ["message.sent", "message.failed"])
    everything = create(edge, creator, {"url": "https://8.8.8.8/all"}).json()
    assert len(everything["events"]) == 7, "every event when none is named"

    listed = edge.call("GET", "/webhooks", token(creator)).json()["endpoints"]
    assert [e["id"] for e in listed] == [made["id"], everything["id"]], "oldest first"
    assert all("secret" not in e for e in listed), "a secret is shown once, when made"
    assert edge.call("GET", "/webhooks", token(other)).json() == {"endpoints": []}, "another account sees none"
    assert edge.call("POST", f"/webhooks/{made['id']}/rotate", token(other)).status_code == 404
    assert edge.call("DELETE", f"/webhooks/{made['id']}", token(other)).status_code == 404

    rotated = edge.call("POST", f"/webhooks/{made['id']}/rotate", token(creator))
    assert rotated.status_code == 200, rotated.text
    rotated = rotated.json()
    assert SECRET.match(rotated["secret"]) and rotated["secret"] != made["secret"]
    grace = parse_time(rotated["previousSecretExpiresAt"]) - datetime.now(timezone.utc)
    assert timedelta(hours=23, minutes=59) < grace <= timedelta(hours=24), "the old secret signs beside the new one for a day"
    listed = {e["id"]: e for e in edge.call("GET", "/webhooks", token(creator)).json()["endpoints"]}
    assert listed[made["id"]]["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    assert "previousSecretExpiresAt" not in listed[everything["id"]]

    assert edge.call("DELETE", f"/webhooks/{made['id']}", token(creator)).status_code == 204
    assert edge.call("DELETE", f"/webhooks/{made['id']}", token(creator)).status_code == 404
    assert edge.call("POST", f"/webhooks/{made['id']}/rotate", token(creator)).status_code == 404
    assert [e["id"] for e in edge.call("GET", "/webhooks", token(creator)).json()["endpoints"]] == [everything["id"]]

    # No secret in the edge's log (the answers are the only place they are shown).
    log = (LOGS / "edge.log").read_text(errors="replace")
    assert not any(s in log for s in (made["secret"], rotated["secret"], everything["secret"]))


def test_an_endpoint_that_would_reach_inside_is_refused_naming_the_field(edge):
    creator = account()
    for url in (
        "http://crm.example.com/hooks",  # not https
        "https://10.1.2.3/hooks",  # private
        "https://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
        "https://[fd00:ec2::254]/",
        "https://127.0.0.1:9000/hooks",  # loopback: this edge is not a local run's
        "http://localhost:9000/hooks",
        "https://metadata.google.internal/",
        "https://user:pw@crm.example.com/",
    ):
        r = create(edge, creator, {"url": url})
        assert r.status_code == 400, (url, r.text)
        assert [d["field"] for d in r.json()["details"]] == ["url"], (url, r.json())
    r = create(edge, creator, {"url": "https://crm.example.com/h", "events": ["message.sent", "message.sent", "message.lost"], "secret": "mine"})
    assert r.status_code == 400
    assert sorted(d["field"] for d in r.json()["details"]) == ["events[1]", "events[2]", "secret"], r.json()
    assert edge.call("GET", "/webhooks", token(creator)).json() == {"endpoints": []}, "nothing refused was registered"


def test_an_account_has_at_most_ten_endpoints(edge):
    creator = account()
    for i in range(10):
        assert create(edge, creator, {"url": f"https://crm.example.com/{i}"}).status_code == 201
    r = create(edge, creator, {"url": "https://crm.example.com/10"})
    assert (r.status_code, r.json()["code"]) == (409, "webhook_limit_reached"), r.text
    first = edge.call("GET", "/webhooks", token(creator)).json()["endpoints"][0]["id"]
    assert edge.call("DELETE", f"/webhooks/{first}", token(creator)).status_code == 204
    assert create(edge, creator, {"url": "https://crm.example.com/10"}).status_code == 201, "room again once one is deleted"


class Receiver:
    """A webhook receiver on loopback: answers each delivery with the next scripted
    status (then 200) and keeps what it got."""

    def __init__(self):
        self.got, self.script = [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.got.append({"at": time.monotonic(), "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                status, extra, *delay = receiver.script.pop(0) if receiver.script else (200, {})
                time.sleep(delay[0] if delay else 0)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", stack.free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def verified(self, delivery, secret):
        """The reference library's verdict: the payload, or None when it refuses."""
        try:
            return Webhook(secret).verify(delivery["body"], delivery["headers"])
        except WebhookVerificationError:
            return None


WEBHOOK_WORKER = {"WEBHOOK_LOOPBACK": "true", "WEBHOOK_RETRY_COMPRESS": "1000", "WEBHOOK_SWEEP_INTERVAL": "1s", "WEBHOOK_TIMEOUT": "2s",
                  "WEBHOOK_ENDPOINTS_REFRESH": "500ms", "CAMPAIGN_REST_INTERVAL": "1s"}
# The worker learns which accounts have endpoints every WEBHOOK_ENDPOINTS_REFRESH: an
# account's first endpoint hears of the outcomes recorded from then on.
REFRESHED = 1.2


@pytest.fixture(scope="module")
def system():
    s = System()
    s.workers = s.start_workers("webhooks", **WEBHOOK_WORKER)
    yield s
    for w in s.workers:
        w.stop()
    s.stop()


def test_a_test_event_is_signed_as_the_reference_library_verifies_and_retried(system):
    edge, creator, receiver = system.edge(), account(), Receiver()
    made = edge.call("POST", "/webhooks", token(creator), json_body={"url": receiver.url}).json()
    receiver.script = [(503, {"retry-after": "1"})]
    r = edge.call("POST", f"/webhooks/{made['id']}/test", token(creator))
    assert r.status_code == 202, r.text
    event_id = r.json()["eventId"]
    wait_for(lambda: len(receiver.got) >= 2, 20, "the test event, tried again after a 503")
    first, second = receiver.got[:2]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == event_id, "one id on every attempt"
    assert second["at"] - first["at"] >= 0.95, "the receiver's Retry-After is honoured"
    payload = receiver.verified(second, made["secret"])
    assert payload is not None, second
    assert payload["type"] == "webhook.test" and payload["data"] == {"endpointId": made["id"]}, payload
    assert receiver.verified(second, "whsec_" + "QUFB" * 8) is None, "another secret does not verify"
    tampered = {**second, "body": second["body"].replace(b"webhook.test", b"webhook.tost")}
    assert receiver.verified(tampered, made["secret"]) is None, "nor another body"
    assert abs(int(second["headers"]["webhook-timestamp"]) - time.time()) < 30

    # A rotation: both secrets sign until the grace ends; the receiver holding either
    # verifies the delivery.
    rotated = edge.call("POST", f"/webhooks/{made['id']}/rotate", token(creator)).json()
    edge.call("POST", f"/webhooks/{made['id']}/test", token(creator))
    wait_for(lambda: len(receiver.got) >= 3, 20, "the test event after the rotation")
    third = receiver.got[2]
    assert len(third["headers"]["webhook-signature"].split(" ")) == 2, third["headers"]
    assert receiver.verified(third, made["secret"]) is not None and receiver.verified(third, rotated["secret"]) is not None


def test_a_receiver_that_says_gone_is_not_tried_again(system):
    edge, creator, receiver = system.edge(), account(), Receiver()
    made = edge.call("POST", "/webhooks", token(creator), json_body={"url": receiver.url}).json()
    receiver.script = [(410, {})]
    edge.call("POST", f"/webhooks/{made['id']}/test", token(creator))
    wait_for(lambda: len(receiver.got) >= 1, 20, "the test event")
    time.sleep(1.0)  # the schedule's steps, compressed: 5 ms, 300 ms, 1.8 s, ...
    assert len(receiver.got) == 1, "410: the endpoint is gone, not tried again"
    wait_for(lambda: "disabled" in edge.call("GET", "/webhooks", token(creator)).json()["endpoints"][0], 10, "the endpoint disabled")
    disabled = edge.call("GET", "/webhooks", token(creator)).json()["endpoints"][0]["disabled"]
    assert "410" in disabled["reason"] and parse_time(disabled["at"]) <= datetime.now(timezone.utc), disabled
    enabled = edge.call("POST", f"/webhooks/{made['id']}/enable", token(creator))
    assert enabled.status_code == 200 and "disabled" not in enabled.json(), enabled.text
    assert "disabled" not in edge.call("GET", "/webhooks", token(creator)).json()["endpoints"][0]
    assert edge.call("POST", f"/webhooks/{made['id']}/enable", token(account())).status_code == 404, "another account's"


def waiting_events(system, creator):
    """The account's events still waiting for delivery (the outbox items)."""
    r = system.emulator.ddb.query(TableName=system.aws.table, KeyConditionExpression="creatorId = :c AND begins_with(messageId, :e)",
                                  ExpressionAttributeValues={":c": {"S": creator}, ":e": {"S": "#event#"}}, ConsistentRead=True)
    return [i for i in r["Items"] if "waitShard" in i or "endpoints" in i]


def events_of(receiver, secret):
    """What the receiver got, each verified by the reference library: (webhook-id, payload)."""
    out = []
    for d in receiver.got:
        payload = receiver.verified(d, secret)
        assert payload is not None, d
        out.append((d["headers"]["webhook-id"], payload))
    return out


def test_each_outcome_is_told_once_to_the_endpoints_that_asked(system):
    edge, creator, receiver, other = system.edge(), account(), Receiver(), Receiver()
    hook = edge.call("POST", "/webhooks", token(creator), json_body={"url": receiver.url, "events": ["message.sent", "message.failed"]}).json()
    only_failed = edge.call("POST", "/webhooks", token(creator), json_body={"url": other.url, "events": ["message.failed"]}).json()
    time.sleep(REFRESHED)
    tag = hook["id"][-6:]
    system.control("POST", "/_control/failures", {"recipientPattern": f"w{tag}-refused", "status": 400})
    ok = [system.send(creator, [f"w{tag}-fan-{i}"])[0] for i in range(2)]
    [refused] = system.send(creator, [f"w{tag}-refused"])
    wait_for(lambda: len(receiver.got) >= 3 and len(other.got) >= 1, 30, "an event per outcome")
    time.sleep(0.5)
    got = events_of(receiver, hook["secret"])
    assert len(got) == 3 and len({i for i, _ in got}) == 3, f"each outcome told once: {got}"
    by_message = {p["data"]["messageId"]: p for _, p in got}
    assert set(by_message) == set(ok) | {refused}
    for m in ok:
        p = by_message[m]
        assert p["type"] == "message.sent" and p["data"]["attempts"] >= 1 and parse_time(p["data"]["sentAt"]), p
    p = by_message[refused]
    assert p["type"] == "message.failed" and p["data"]["retryable"] is True and "400" in p["data"]["error"], p
    assert "content" not in json.dumps(p) or "hello" not in json.dumps(p), "ids and counts, never the content"
    [(_, failed_only)] = events_of(other, only_failed["secret"])
    assert failed_only["type"] == "message.failed" and failed_only["data"]["messageId"] == refused, "only what it asked for"
    # Delivered everywhere: none waits any more (each out of the index, expiring).
    wait_for(lambda: not waiting_events(system, creator), 10, "the delivered events out of the waiting index")


def test_an_event_whose_worker_died_is_delivered_by_another_with_the_same_id(system):
    """The receiver holds the first attempt past WEBHOOK_TIMEOUT; the worker that recorded
    the outcome is killed (-9) meanwhile; another takes the event over once its lease
    ran out and delivers it, with the same id."""
    edge, creator, receiver = system.edge(), account(), Receiver()
    hook = edge.call("POST", "/webhooks", token(creator), json_body={"url": receiver.url, "events": ["message.sent"]}).json()
    receiver.script = [(200, {}, 4)]  # answered after the worker gave up waiting (2 s)
    time.sleep(REFRESHED)
    [mid] = system.send(creator, [f"w{hook['id'][-6:]}-fan"])
    wait_for(lambda: len(receiver.got) >= 1, 30, "the first attempt")
    for w in system.workers:
        w.stop(signal.SIGKILL)
    system.workers = system.start_workers("webhooks2", **WEBHOOK_WORKER)
    # The lease: twice WEBHOOK_TIMEOUT and 5 s (9 s) from the outcome, then a sweep (1 s).
    wait_for(lambda: len(receiver.got) >= 2, 30, "the event taken over by the new worker")
    first, second = receiver.got[:2]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert receiver.verified(second, hook["secret"])["data"]["messageId"] == mid
    wait_for(lambda: not waiting_events(system, creator), 10, "the delivered event out of the waiting index")


def test_pauses_resumes_cancels_and_finished_campaigns_are_told_once(system):
    """`account.paused` and `account.resumed` for the user's controls, and `account.paused`
    for a 429 asking for a long wait; `campaign.canceled` and `campaign.completed` once
    each (every worker sees them done), with counts that add up to the total;
    `message.canceled` once for a message canceled twice."""
    edge, creator, receiver = system.edge(), account(), Receiver()
    tok = token(creator)
    kinds = ["account.paused", "account.resumed", "campaign.completed", "campaign.canceled", "message.canceled"]
    hook = create(edge, creator, {"url": receiver.url, "events": kinds}).json()
    time.sleep(REFRESHED)
    tag = hook["id"][-6:]
    assert edge.call("POST", "/account/pause", tok).status_code == 200
    held = edge.call("POST", "/send", tok, json_body={"recipientIds": [f"w{tag}-held-{i}" for i in range(3)], "content": "held"}).json()["campaignId"]
    wait_for(lambda: len(system.emulator.items(creator)) >= 3, 20, "the held campaign fanned out")
    assert edge.call("DELETE", f"/campaigns/{held}", tok).status_code == 200
    assert edge.call("POST", "/account/resume", tok).status_code == 200
    done = edge.call("POST", "/send", tok, json_body={"recipientIds": [f"w{tag}-fan-{i}" for i in range(2)], "content": "hi"}).json()["campaignId"]
    wait_for(lambda: len(receiver.got) >= 4, 30, "the controls and both campaigns told")
    system.control("POST", "/_control/failures", {"recipientPattern": f"w{tag}-slow", "status": 429, "retryAfter": 120})
    system.send(creator, [f"w{tag}-slow"])
    wait_for(lambda: len(receiver.got) >= 5, 30, "the long 429 told")
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    mid = edge.call("POST", "/send", tok, json_body={"recipientId": f"w{tag}-later", "content": "later", "sendAt": later}).json()["messageId"]
    assert edge.call("DELETE", f"/{mid}", tok).status_code == 200
    assert edge.call("DELETE", f"/{mid}", tok).status_code == 200, "canceled twice: told once"
    wait_for(lambda: len(receiver.got) >= 6, 30, "the cancel told (by a worker's sweep)")
    time.sleep(2.5)  # two more rests and sweeps of each worker: nothing told again
    got = events_of(receiver, hook["secret"])
    assert len({i for i, _ in got}) == len(got) == 6, [p for _, p in got]
    by = {}
    for _, p in got:
        by.setdefault(p["type"], []).append(p)
    [paused_by_user, paused_by_429] = sorted(by["account.paused"], key=lambda p: p["timestamp"])
    [resumed] = by["account.resumed"]
    assert paused_by_user["data"] == {"accountId": creator, "reason": "user"}
    assert resumed["data"] == {"accountId": creator, "reason": "user"}
    assert parse_time(paused_by_user["timestamp"]) <= parse_time(resumed["timestamp"])
    assert paused_by_429["data"]["reason"] == "rate_limited", paused_by_429
    waits = (parse_time(paused_by_429["data"]["until"]) - parse_time(paused_by_429["timestamp"])).total_seconds()
    assert 100 < waits <= 121, paused_by_429
    [canceled] = by["campaign.canceled"]
    assert canceled["data"] == {"campaignId": held, "total": 3, "sent": 0, "failed": 0, "canceled": 3}
    [completed] = by["campaign.completed"]
    assert completed["data"] == {"campaignId": done, "total": 2, "sent": 2, "failed": 0, "canceled": 0}
    [canceled_one] = by["message.canceled"]
    assert canceled_one["data"]["messageId"] == mid and parse_time(canceled_one["data"]["canceledAt"]), canceled_one


def test_the_delivery_log_shows_each_attempt_and_an_event_is_redelivered(system):
    """`GET /webhooks/{id}/deliveries`: an event retrying after a 503 (its attempts, last
    answer and next attempt), then delivered; `POST …/redeliver` sends it again with the
    same id (a worker's sweep), and the log starts its attempts again; an event the
    endpoint never had is not found."""
    edge, creator, receiver = system.edge(), account(), Receiver()
    tok, started = token(creator), time.time()
    hook = create(edge, creator, {"url": receiver.url, "events": ["message.sent"]}).json()
    log = lambda: edge.call("GET", f"/webhooks/{hook['id']}/deliveries", tok).json()["deliveries"]
    receiver.script = [(503, {"retry-after": "3"})]
    time.sleep(REFRESHED)
    [mid] = system.send(creator, [f"w{hook['id'][-6:]}-fan"])
    wait_for(lambda: log() and log()[0]["state"] == "retrying", 20, "the first attempt failed, logged")
    [retrying] = log()
    assert retrying["type"] == "message.sent" and retrying["attempts"] == 1 and "503" in retrying["lastAnswer"], retrying
    wait = (parse_time(retrying["nextAttemptAt"]) - parse_time(retrying["lastAttemptAt"])).total_seconds()
    assert 2.9 <= wait <= 3.1, retrying
    wait_for(lambda: log()[0]["state"] == "delivered", 20, "delivered at the second attempt")
    [delivered] = log()
    assert (delivered["eventId"], delivered["attempts"], delivered["lastAnswer"]) == (retrying["eventId"], 2, "delivered"), delivered
    assert "nextAttemptAt" not in delivered
    again = edge.call("POST", f"/webhooks/{hook['id']}/deliveries/{delivered['eventId']}/redeliver", tok)
    assert again.status_code == 202 and again.json() == {"eventId": delivered["eventId"], "state": "redelivering"}, again.text
    wait_for(lambda: len(receiver.got) >= 3, 20, "sent again by a sweep")
    wait_for(lambda: log()[0]["state"] == "delivered", 10, "delivered again")
    assert log()[0]["attempts"] == 1, log()
    ids = {d["headers"]["webhook-id"] for d in receiver.got}
    assert ids == {delivered["eventId"]}, "one event, one id, every time"
    assert events_of(receiver, hook["secret"])[-1][1]["data"]["messageId"] == mid
    wait_for(lambda: not waiting_events(system, creator), 10, "out of the waiting index again")
    missing = edge.call("POST", f"/webhooks/{hook['id']}/deliveries/evt_{mid}.0.failed/redeliver", tok)
    assert missing.status_code == 404 and "evt_" in missing.json()["error"], missing.text
    other = create(edge, creator, {"url": receiver.url, "events": ["message.sent"]}).json()
    refused = edge.call("POST", f"/webhooks/{other['id']}/deliveries/{delivered['eventId']}/redeliver", tok)
    assert refused.status_code == 404, "not an event that endpoint was sent"
    # The metrics (the module's workers flush each second): the failed attempt, both
    # deliveries, and the event's age while it waited for its retry.
    def total(name, stat="Sum"):
        values = [v for env in ("webhooks", "webhooks2") for v in system.metric(env, name, stat, since=started)]
        return max(values, default=0) if stat == "Maximum" else sum(values)
    wait_for(lambda: total("WebhookFailures") >= 1 and total("WebhookDeliveries") >= 2, 10, "the webhook metrics published")
    assert total("WebhookOldestEventAge", "Maximum") >= 1, "an event waiting for its retry has an age"


def test_a_redis_loss_and_a_dead_endpoint_lose_no_event_and_delay_no_one_else(system):
    """Redis loses its data (FLUSHALL) while the events of recorded outcomes are being
    delivered: each is delivered all the same (events live in the ledger, with their
    outcome), and none tells of a send that did not happen (the rebuilt schedule sends
    nothing twice). Meanwhile another account's receiver hangs past WEBHOOK_TIMEOUT:
    that account's messages are sent on time and the first account's events are not held
    behind its endpoint."""
    edge = system.edge()
    creator, stuck = account(), account()
    receiver, hanging = Receiver(), Receiver()
    hook = create(edge, creator, {"url": receiver.url, "events": ["message.sent"]}).json()
    create(edge, stuck, {"url": hanging.url, "events": ["message.sent"]})
    hanging.script = [(200, {}, 30)] * 10  # each answer after the worker gave up (2 s)
    receiver.script = [(503, {"retry-after": "2"})] * 3  # the first attempts fail: the events wait through the loss
    time.sleep(REFRESHED)
    tag = hook["id"][-6:]
    stuck_ids = system.send(stuck, [f"w{tag}-stuck-{i}" for i in range(3)])
    ids = system.send(creator, [f"w{tag}-fan-{i}" for i in range(3)])
    wait_for(lambda: len(receiver.got) >= 3, 20, "the first attempts (failed)")
    system.redis_count("EVAL", "redis.call('FLUSHALL') return 0", "0")
    wait_for(lambda: {p["data"]["messageId"] for _, p in events_of(receiver, hook["secret"])[3:]} == set(ids), 30,
             "each event delivered after the loss")
    system.wait_delivered(stuck_ids, timeout=10)
    time.sleep(1.5)  # a rebuild's sends, if any, and their events
    delivered = [d["messageId"] for d in system.deliveries({creator})]
    assert sorted(delivered) == sorted(ids), "each message sent once, the loss notwithstanding"
    told = [p["data"]["messageId"] for _, p in events_of(receiver, hook["secret"])]
    assert set(told) == set(ids), "no event of a send that did not happen"
    assert len(hanging.got) >= 1, "the hanging receiver was tried"
