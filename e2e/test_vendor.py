"""The worker against OnlyFansAPI.com's protocol (`GATEWAY_KIND=onlyfansapi`), through
the stand-in that answers as the vendor documents (`gateway-stub --protocol
onlyfansapi`: bearer API key, idempotent replays by `Idempotency-Key`, 401, 422):
each message held once at the vendor though answers are lost, an account whose key is
refused held (nothing sent, nothing failed) with the reason in `GET /status` until
resumed, a refusal failing the message with the vendor's own words."""

import signal
import time
import uuid

import pytest
import requests

from harness import LOGS, MARGIN_MS, System, fans, figure, max_in_window, ms, token
from harness import wait_for as wait_until
from devstack import stack

KEY = "vendor-key-0123456789"


@pytest.fixture(scope="module")
def system():
    s = System()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def vendor(system):
    port = stack.free_port()
    part = stack.start_gateway_stub(port, LOGS / "vendor-stub.log", "--protocol", "onlyfansapi", "--api-key", KEY)
    yield f"http://127.0.0.1:{port}"
    part.stop()


@pytest.fixture(autouse=True)
def nothing_left_waiting(system):
    yield
    system.abandon_waiting()


def vendor_workers(system, vendor, prefix, key=KEY):
    stack.record_secret(key)
    return system.start_workers(prefix, GATEWAY_KIND="onlyfansapi", GATEWAY_URL=vendor, GATEWAY_TOKEN=key)


def wait_statuses(system, account, want, timeout):
    """Until the account's items are in these statuses ({status: how many})."""
    def counted():
        statuses = [i["status"]["S"] for i in system.emulator.items(account)]
        return {s: statuses.count(s) for s in set(statuses)}
    wait_until(lambda: counted() == want, timeout, f"{account}'s items {want}")


def held(vendor, ids):
    """How many times the vendor took each message (its key is the message id)."""
    got = [d["messageId"] for d in requests.get(vendor + "/deliveries", timeout=10).json()]
    return {i: got.count(i) for i in ids}


def test_each_message_is_held_once_at_the_vendor_though_its_answers_are_lost(system, vendor):
    """The first answer to one message comes after the worker gave up (GATEWAY_TIMEOUT
    2 s), another meets a 502: both are tried again with the same Idempotency-Key, and
    the vendor answers the retry with the first result instead of sending again."""
    tag = uuid.uuid4().hex[:8]
    account = f"vend-{tag}"
    requests.post(vendor + "/_control/failures", json={"recipientPattern": f"{tag}-hung", "status": 200, "count": 1, "delayMs": 3000}, timeout=5)
    requests.post(vendor + "/_control/failures", json={"recipientPattern": f"{tag}-flaky", "status": 502, "count": 1}, timeout=5)
    workers = vendor_workers(system, vendor, "vend")
    try:
        ids = system.send(account, fans(tag, 4) + [f"{tag}-hung", f"{tag}-flaky"])
        wait_statuses(system, account, {"sent": len(ids)}, timeout=40)
    finally:
        for w in workers:
            w.stop()
        requests.delete(vendor + "/_control/failures", timeout=5)
    assert held(vendor, ids) == {i: 1 for i in ids}, "each message once at the vendor"
    deliveries = [d for d in requests.get(vendor + "/deliveries", timeout=10).json() if d["accountId"] == account]
    assert {d["path"] for d in deliveries} == {f"/api/{account}/chats/{d['recipientId']}/messages" for d in deliveries}
    assert all(d["authorization"] == f"Bearer {KEY}" and d["body"]["text"] == "hello" for d in deliveries)


def test_each_message_is_held_once_at_the_vendor_through_a_kill_9_a_redis_loss_and_duplicates(system, vendor):
    """The worker is killed while the vendor holds one answer (the message reached it),
    Redis then loses everything, and every queue message (a campaign's among them) is
    handed over once more, as SQS may: the next worker rebuilds the schedule from the
    ledger, sends the killed worker's message again once its claim lapses, with the same
    Idempotency-Key (the vendor answers with its first result), finds the duplicates
    finished or scheduled already, and the vendor holds each message once."""
    tag = uuid.uuid4().hex[:8]
    single, mass = f"vkill-{tag}", f"vkillc-{tag}"
    requests.post(vendor + "/_control/failures", json={"recipientPattern": f"{tag}-hung", "status": 200, "count": 1, "delayMs": 30000}, timeout=5)
    singles = [system.send(single, [f])[0] for f in [f"{tag}-hung"] + fans(tag, 4)]
    campaign = system.send(mass, fans(f"c{tag}", 8))
    campaign_id = campaign[-1][:30] + "ffffff"
    copies = system.capture(singles + [campaign_id])
    system.requeue(copies)
    ids = singles + campaign
    workers = vendor_workers(system, vendor, "vkill")
    try:
        wait_until(lambda: held(vendor, ids)[singles[0]] == 1, 20, "the hung message at the vendor")
        workers[0].stop(signal.SIGKILL)
        system.redis_count("EVAL", "redis.call('FLUSHALL') return 0", "0")
        # The dead worker's long poll (SQS_WAIT_SECONDS 2) may still be open at the queue,
        # and would take the copies with it until their visibility timeout.
        time.sleep(2.5)
        system.requeue(copies)
        workers = vendor_workers(system, vendor, "vkill")
        wait_statuses(system, single, {"sent": len(singles)}, timeout=40)
        wait_statuses(system, mass, {"sent": len(campaign)}, timeout=40)
        wait_until(system.queue_empty, 20, "the duplicates received")
        wait_until(lambda: system.redis_count("ZCARD", "vkill:leases") == 0, 20, "nothing held")
    finally:
        for w in workers:
            w.stop()
        requests.delete(vendor + "/_control/failures", timeout=5)
    assert held(vendor, ids) == {i: 1 for i in ids}, "each message once at the vendor"
    # The killed worker never had the hung message's answer (held 30 s): `sent` is the
    # next worker's doing, answered by the vendor's replay of its first result.
    [hung] = [i for i in system.emulator.items(single) if i["messageId"]["S"] == singles[0]]
    assert hung["status"]["S"] == "sent" and hung["gatewayMessageId"]["S"].isdigit(), hung


def test_an_account_reaches_the_vendor_under_the_id_it_was_given_there(system, vendor):
    """`PUT /account/vendor` names the account's id at the vendor (OnlyFansAPI.com's
    `acct_…`, unlike ours): every send of the account goes to that account's URL, and
    another account with none set goes under its own id."""
    tag = uuid.uuid4().hex[:8]
    mapped, plain = f"mapped-{tag}", f"plain-{tag}"
    edge = system.edge()
    r = edge.call("PUT", "/account/vendor", token(mapped), {"vendorAccountId": f"acct_{tag}"})
    assert r.status_code == 200 and r.json() == {"vendorAccountId": f"acct_{tag}"}, r.text
    workers = vendor_workers(system, vendor, "mapped")
    try:
        ids = system.send(mapped, fans(tag, 3)) + system.send(plain, [f"{tag}-p"])
        wait_statuses(system, mapped, {"sent": 3}, timeout=30)
        wait_statuses(system, plain, {"sent": 1}, timeout=30)
    finally:
        for w in workers:
            w.stop()
    assert held(vendor, ids) == {i: 1 for i in ids}
    paths = {d["messageId"]: d["path"] for d in requests.get(vendor + "/deliveries", timeout=10).json() if d["messageId"] in ids}
    assert paths == {**{i: f"/api/acct_{tag}/chats/{tag}-fan-{n}/messages" for n, i in enumerate(ids[:3])}, ids[3]: f"/api/{plain}/chats/{tag}-p/messages"}, paths


def test_a_refused_key_holds_the_account_with_its_reason_until_resumed(system, vendor):
    """A 401 is the account's state, not the message's: nothing fails, nothing more is
    tried, `GET /status` says paused and why; once the key is fixed (the worker
    restarted with it) and the user resumes, everything goes, once."""
    tag = uuid.uuid4().hex[:8]
    account = f"keyless-{tag}"
    edge, tok = system.edge(), token(account)
    workers = vendor_workers(system, vendor, "keyless", key="a-revoked-key")
    try:
        ids = system.send(account, fans(tag, 3))
        wait_until(lambda: edge.call("GET", "/status", tok).json()["account"]["paused"], 20, "the account held")
        account_state = edge.call("GET", "/status", tok).json()["account"]
        assert "401" in account_state["pausedReason"] and "Unauthorized" in account_state["pausedReason"], account_state
        time.sleep(1.5)  # held: no more attempts, nothing failed
        statuses = sorted(i["status"]["S"] for i in system.emulator.items(account))
        assert statuses == ["queued"] * 3, statuses
        assert held(vendor, ids) == {i: 0 for i in ids}
    finally:
        for w in workers:
            w.stop()
    workers = vendor_workers(system, vendor, "keyless")
    try:
        r = edge.call("POST", "/account/resume", tok)
        assert r.status_code == 200, r.text
        wait_statuses(system, account, {"sent": 3}, timeout=30)
        assert "pausedReason" not in edge.call("GET", "/status", tok).json()["account"]
    finally:
        for w in workers:
            w.stop()
    assert held(vendor, ids) == {i: 1 for i in ids}


def test_a_message_the_vendor_refuses_fails_with_the_vendors_reason(system, vendor):
    tag = uuid.uuid4().hex[:8]
    account = f"refused-{tag}"
    requests.post(vendor + "/_control/failures", json={"recipientPattern": f"{tag}-blocked", "status": 422}, timeout=5)
    workers = vendor_workers(system, vendor, "refused")
    try:
        [ok, blocked] = system.send(account, [f"{tag}-fan", f"{tag}-blocked"])
        wait_statuses(system, account, {"sent": 1, "failed": 1}, timeout=30)
    finally:
        for w in workers:
            w.stop()
        requests.delete(vendor + "/_control/failures", timeout=5)
    [item] = [i for i in system.emulator.items(account) if i["messageId"]["S"] == blocked]
    assert item["attempts"]["N"] == "1", "refused for good: not tried again"
    assert item["lastError"]["S"] == "vendor answered 422 (refused): told to fail with 422", item["lastError"]


def test_a_paid_campaign_reaches_the_vendor_with_its_media_and_price_once(system, vendor):
    """Paid messages: `price`, `mediaIds` and `previewIds` accepted once for the whole
    campaign, carried to the vendor as `price`, `mediaFiles` and `previews` for every
    recipient; a paid message without media refused at the API, naming both fields. The
    vendor's id of each sent message is kept and shown by `GET /{id}`."""
    tag = uuid.uuid4().hex[:8]
    account = f"paid-{tag}"
    edge, tok = system.edge(), token(account)
    refused = edge.call("POST", "/send", tok, {"recipientId": "fan", "content": "unlock", "price": 15})
    assert refused.status_code == 400 and {d["field"] for d in refused.json()["details"]} == {"price", "mediaIds"}, refused.text
    workers = vendor_workers(system, vendor, "paid")
    try:
        r = edge.call("POST", "/send", tok, {"recipientIds": [f"{tag}-{i}" for i in range(3)], "content": "unlock me", "price": 15,
                                            "mediaIds": ["ofapi_media_abc123", 4242], "previewIds": ["4242"]})
        assert r.status_code == 202, r.text
        ids = [m["messageId"] for m in r.json()["messages"]]
        wait_statuses(system, account, {"sent": 3}, timeout=30)
        view = edge.call("GET", f"/{ids[0]}", tok).json()
    finally:
        for w in workers:
            w.stop()
    assert held(vendor, ids) == {i: 1 for i in ids}
    bodies = [d["body"] for d in requests.get(vendor + "/deliveries", timeout=10).json() if d["accountId"] == account]
    assert bodies == [{"text": "unlock me", "price": 15, "mediaFiles": ["ofapi_media_abc123", "4242"], "previews": ["4242"]}] * 3, bodies
    assert view["vendorMedia"] == {"mediaIds": ["ofapi_media_abc123", "4242"], "previewIds": ["4242"], "price": 15}, view
    assert view["gatewayMessageId"].isdigit(), "the vendor's id of the message (its data.id) is kept"


def test_accounts_sharing_one_api_key_keep_its_limit_and_take_turns(system):
    """The vendor's limit per API key (10 per 2 s here, counted at its own clock), set on
    the workers as GATEWAY_RATE_LIMIT_MAX / _WINDOW, binds six accounts sending through
    one key from two workers: it is never over (the vendor never answers 429), each
    account's own limit holds, and while all have messages waiting they take turns (none
    served more than a turn ahead of another), with no idle turn at the key."""
    port = stack.free_port()
    part = stack.start_gateway_stub(
        port, LOGS / "vendor-key-limit-stub.log", "--protocol", "onlyfansapi", "--api-key", KEY, "--key-limit", "10", "--key-window", "2000"
    )
    vendor = f"http://127.0.0.1:{port}"
    tag = uuid.uuid4().hex[:8]
    accounts = [f"shared-{tag}-{i}" for i in range(6)]
    try:
        ids = [i for a in accounts for i in system.send(a, fans(f"{tag}{a[-1]}", 8))]
        stack.record_secret(KEY)
        workers = system.start_workers(
            "shared", n=2, GATEWAY_KIND="onlyfansapi", GATEWAY_URL=vendor, GATEWAY_TOKEN=KEY, GATEWAY_RATE_LIMIT_MAX="10", GATEWAY_RATE_LIMIT_WINDOW="2000ms",
            GATEWAY_RATE_LIMIT_MARGIN=f"{MARGIN_MS}ms",
        )
        try:
            wait_until(lambda: sum(held(vendor, ids).values()) == len(ids), 60, "every message at the vendor")
        finally:
            for w in workers:
                w.stop()
        assert held(vendor, ids) == {i: 1 for i in ids}, "each message once"
        refused = requests.get(vendor + "/refused", timeout=10).json()
        assert [r for r in refused if r.get("status") == 429] == [], "the key's limit never reached at the vendor"
        got = sorted((ms(d["receivedAt"]), d["accountId"]) for d in requests.get(vendor + "/deliveries", timeout=10).json())
        times = [t for t, _ in got]
        assert max_in_window(times, 2000) <= 10, "the key's limit at the vendor's clock"
        for a in accounts:
            assert max_in_window([t for t, acct in got if acct == a], 2000) <= 10, f"{a}'s own limit"
        # Turns: every account has 8 waiting; after 30 sends each has had 5, give or take one.
        first = [acct for _, acct in got[:30]]
        shares = [first.count(a) for a in accounts]
        spacing = (2000 + MARGIN_MS) / 10
        span = times[-1] - times[0]
        figure("credential_limit", accounts=len(accounts), sends=len(times), worst_window=max_in_window(times, 2000), shares=shares, span_ms=span,
               ideal_ms=(len(times) - 1) * spacing)
        assert max(shares) - min(shares) <= 2, f"turns in the first 30 sends: {shares}"
        assert span <= 1.5 * (len(times) - 1) * spacing, f"no idle turns at the key: {span:.0f} ms for {len(times)} sends"
    finally:
        part.stop()
