"""The edge through the real runtime: every route and error path of docs/design.md §3 over HTTP
against `wrangler dev`, with SQS and the ledger read back from the AWS emulator."""

import concurrent.futures
import json
import time
from datetime import datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from harness import BASE, ORIGIN, account, account_counts, edge_settings, start_edge, token, wait_for
from devstack.faultproxy import FaultProxy


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def send(edge, creator, body=None, **kw):
    body = body or {"recipientId": "fan-1", "content": "Hello"}
    return edge.call("POST", "/send", token(creator), json_body=body, **kw)


# ---- health and routing ---------------------------------------------------------

def test_health_and_test_need_no_token(edge):
    for path in ("/health", "/test"):
        r = edge.call("GET", path)
        assert r.status_code == 200 and r.json()["status"] == "ok"


def test_unknown_route_and_wrong_method(edge):
    assert edge.call("GET", "/nope/deeper/still", token(account())).json()["code"] == "not_found"
    r = edge.call("GET", "/send", token(account()))
    assert (r.status_code, r.json()["code"], r.headers.get("allow")) == (405, "method_not_allowed", "POST"), "RFC 9110: a 405 names the methods"
    assert edge.call("TRACE", "/campaigns/x", token(account())).headers.get("allow") == "GET, DELETE"


# ---- authentication -------------------------------------------------------------

@pytest.mark.parametrize(
    "header, code",
    [
        (None, "missing_token"),
        ("Basic dXNlcjpwYXNz", "missing_token"),
        ("Bearer not.a.token", "invalid_token"),
        ("Bearer " + token("c", secret="another-secret-0123456789abcdef0123"), "invalid_token"),
        ("Bearer " + token("c", exp_in=-3600), "token_expired"),
        ("Bearer " + token("c", exp_in=None), "invalid_token"),
        ("Bearer " + token("c", nbf=int(time.time()) + 3600), "token_not_yet_valid"),
        ("Bearer " + jwt.encode({"sub": "c", "exp": int(time.time()) + 600}, None, algorithm="none"), "invalid_token"),
        ("Bearer " + "a" * 9000, "invalid_token"),
    ],
)
def test_bad_tokens_get_401_with_their_code(edge, header, code):
    r = edge.call("GET", "/status", headers={"authorization": header} if header else {})
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "Not authenticated", "code": code}
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
def test_jwks_tokens_act_for_their_account(edge, jwks, emulator, kid):
    creator = account()
    r = edge.call("POST", "/send", jwks.token(kid, creator), json_body={"recipientId": "fan-1", "content": "hi"})
    assert r.status_code == 202, r.text
    assert emulator.item(creator, r.json()["messageId"])["creatorId"]["S"] == creator
    assert edge.call("GET", f"/{r.json()['messageId']}", jwks.token(kid, account())).status_code == 404, "not another account's"


def test_a_key_removed_from_the_jwks_is_refused_after_the_refetch(edge, jwks):
    """Key rotation: the issuer publishes a new key and withdraws an old one; the first
    token of the new key refetches the set, after which the old key's tokens fail."""
    old_key = ec.generate_private_key(ec.SECP256R1())
    jwks.add("ec-old", "ES256", old_key)
    time.sleep(1.1)  # past JWKS_REFRESH_INTERVAL_SECONDS=1
    old = jwks.token("ec-old", account())
    assert edge.call("GET", "/status", old).status_code == 200
    jwks.published.discard("ec-old")
    jwks.add("ec-next", "ES256", ec.generate_private_key(ec.SECP256R1()))
    time.sleep(1.1)
    assert edge.call("GET", "/status", jwks.token("ec-next", account())).status_code == 200
    r = edge.call("GET", "/status", old)
    assert (r.status_code, r.json()["code"]) == (401, "invalid_token")


def test_unknown_kid_refetches_the_jwks(edge, jwks):
    edge.call("GET", "/status", jwks.token("ec-1", account()))  # the set is loaded
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.keys["ec-new"] = ("ES256", key)  # known to the issuer, not yet published
    unpublished = jwks.token("ec-new", account())
    assert edge.call("GET", "/status", unpublished).status_code == 401
    jwks.add("ec-new", "ES256", key)  # the issuer rotates its keys
    time.sleep(1.2)  # past JWKS_REFRESH_INTERVAL_SECONDS=1
    assert edge.call("GET", "/status", unpublished).status_code == 200


def test_hs256_token_signed_with_a_public_key_is_refused(edge, jwks):
    public_pem = jwks.keys["rsa-1"][1].public_key().public_bytes(
        encoding=__import__("cryptography").hazmat.primitives.serialization.Encoding.PEM,
        format=__import__("cryptography").hazmat.primitives.serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    import hmac, hashlib, base64, json as j

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(j.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    body = b64(j.dumps({"sub": "c", "exp": int(time.time()) + 600}).encode())
    sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    r = edge.call("GET", "/status", f"{head}.{body}.{sig}")
    assert (r.status_code, r.json()["code"]) == (401, "invalid_token")


# ---- POST /send -----------------------------------------------------------------

def test_send_queues_one_message_and_writes_its_ledger_item(edge, emulator):
    creator = account()
    body = {"recipientId": "fan-42", "content": "Hello 👋", "priority": 2,
            "mediaUrls": ["https://cdn.example.com/a.jpg"], "metadata": {"campaign": "spring", "n": 3}}
    before = time.time()
    r = send(edge, creator, body)
    assert r.status_code == 202, r.text
    a = r.json()
    assert a["success"] is True and a["status"] == "queued" and a["queuePosition"] == 1
    assert abs(parse_time(a["estimatedSendTime"]).timestamp() - before) < 10

    [queued] = emulator.queue_messages()[a["messageId"]]
    m = queued["body"]
    assert m["creatorId"] == creator and m["recipientId"] == "fan-42" and m["content"] == "Hello 👋"
    assert m["priority"] == 2 and m["mediaUrls"] == body["mediaUrls"] and m["metadata"] == body["metadata"]
    assert m["generation"] == 0 and m["id"] == a["messageId"]
    attrs = queued["attributes"]
    assert attrs["creatorId"]["StringValue"] == creator
    assert attrs["priority"]["StringValue"] == "2"
    assert attrs["messageType"]["StringValue"] == "onlyfans"

    item = emulator.item(creator, a["messageId"])
    assert item["status"]["S"] == "queued" and item["attempts"]["N"] == "0"
    assert item["recipientId"]["S"] == "fan-42" and item["acceptedAt"]["S"] == m["acceptedAt"]
    assert "ttl" not in item  # a waiting message never expires: its expiry is set when it ends
    assert "failedKey" not in item


def held_backlog(edge, backend, emulator, n):
    """A new account with `n` messages through the real worker, limited to one an hour:
    it sends the first and holds the rest in its schedule (the summary's backlog)."""
    creator = account()
    backend.limit(creator, "1 3600000 1")
    with backend.running():
        for i in range(n):
            assert send(edge, creator, {"recipientId": f"fan-{i}", "content": "x"}).status_code == 202
        wait_for(lambda: (emulator.item(creator, "#summary") or {}).get("sent", {}).get("N") == "1"
                 and emulator.item(creator, "#summary")["queued"]["N"] == str(n - 1), 20, "the backlog scheduled and one sent")
    time.sleep(position_fresh_s)  # the edge reads an account's backlog at most once a second
    return creator


position_fresh_s = 1.1


def test_queue_position_and_estimate_follow_the_backlog(edge, backend, emulator):
    creator = account()
    answers = [send(edge, creator).json() for _ in range(3)]
    assert [a["queuePosition"] for a in answers] == [1, 2, 3]
    t = [parse_time(a["estimatedSendTime"]).timestamp() for a in answers]
    # 10 a minute: one spacing (6 s) between consecutive messages of one account.
    assert 5 <= t[1] - t[0] <= 7 and 5 <= t[2] - t[1] <= 7
    # Another account is not behind this one.
    assert send(edge, account()).json()["queuePosition"] == 1
    # Concurrent sends of one account get distinct places, even before a read is back.
    burst = account()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        places = sorted(pool.map(lambda _: send(edge, burst).json()["queuePosition"], range(6)))
    assert places == [1, 2, 3, 4, 5, 6], places
    # An account whose backlog the worker holds lines up behind it.
    busy = held_backlog(edge, backend, emulator, 8)
    a = send(edge, busy).json()
    assert a["queuePosition"] == 8
    # Eight spacings after the account's last send: the next free slot, then 7 more.
    [last] = backend.delivered(busy)
    expected = parse_time(last["receivedAt"]).timestamp() + 8 * 6
    assert abs(parse_time(a["estimatedSendTime"]).timestamp() - expected) < 1, (a["estimatedSendTime"], last["receivedAt"])


def test_mass_message(edge, emulator):
    """A mass message is one campaign: its item (content once, the recipient list) and
    one queue message naming it. Every message id answers `GET /{id}` at once, before
    any worker has fanned it out, and the campaign shows its progress."""
    creator = account()
    fans = [f"fan-{i}" for i in range(25)]
    r = send(edge, creator, {"recipientIds": fans, "content": "News for everyone", "priority": 3})
    assert r.status_code == 202, r.text
    a = r.json()
    assert a["success"] is True and a["status"] == "queued" and a["count"] == 25
    assert [e["recipientId"] for e in a["messages"]] == fans
    assert [e["queuePosition"] for e in a["messages"]] == list(range(1, 26))
    assert all(e["status"] == "queued" for e in a["messages"])
    ids = [e["messageId"] for e in a["messages"]]
    assert len(set(ids)) == 25 and ids == sorted(ids), "distinct, in request order"
    cid = a["campaignId"]
    [q] = emulator.queue_messages()[cid]
    assert q["body"] == {"campaign": cid, "creatorId": creator}, "the queue names the campaign, nothing more"
    assert q["attributes"]["priority"]["StringValue"] == "3"
    head, body = emulator.campaign(creator, cid), emulator.item(creator, f"#body#{cid}")
    assert body["content"]["S"] == "News for everyone" and json.loads(body["recipients"]["S"]) == fans
    assert "content" not in head and "recipients" not in head, "the head, rewritten by every outcome, stays small"
    assert int(body["ttl"]["N"]) >= int(head["ttl"]["N"]), "the body outlives the head's first expiry"
    assert emulator.items(creator) == [], "the worker writes the messages' items"
    m = edge.call("GET", f"/{ids[7]}", token(creator))
    assert m.status_code == 200, m.text
    assert (m.json()["status"], m.json()["recipientId"], m.json()["content"], m.json()["campaignId"]) == ("queued", "fan-7", "News for everyone", cid)
    c = edge.call("GET", f"/campaigns/{cid}", token(creator)).json()
    assert (c["status"], c["total"], c["queued"], c["sent"], c["failed"], c["canceled"]) == ("sending", 25, 25, 0, 0, 0)
    assert c["estimatedCompletionTime"] >= a["messages"][-1]["estimatedSendTime"][:19]
    assert edge.call("GET", f"/campaigns/{cid}", token(account())).status_code == 404, "another account's campaign"
    assert edge.call("GET", f"/{ids[7]}", token(account())).status_code == 404


def test_campaigns_are_listed_newest_first_and_paged(edge):
    creator = account()
    made = [send(edge, creator, {"recipientIds": [f"a{i}", f"b{i}"], "content": f"c{i}"}).json()["campaignId"] for i in range(3)]
    first = edge.call("GET", "/campaigns?limit=2", token(creator)).json()
    assert [c["campaignId"] for c in first["campaigns"]] == made[::-1][:2]
    assert all(c["total"] == 2 and c["queued"] == 2 for c in first["campaigns"])
    rest = edge.call("GET", f"/campaigns?limit=2&cursor={first['nextCursor']}", token(creator)).json()
    assert [c["campaignId"] for c in rest["campaigns"]] == made[:1] and rest["nextCursor"] is None
    other = edge.call("GET", f"/campaigns?cursor={first['nextCursor']}", token(account()))
    assert (other.status_code, other.json()["details"][0]["field"]) == (400, "cursor")
    assert edge.call("GET", "/campaigns", token(account())).json() == {"campaigns": [], "nextCursor": None}


def test_validation_lists_every_bad_field(edge):
    r = send(edge, account(), {"recipientId": "", "content": "x" * 5001, "priority": 11,
                               "mediaUrls": ["http://insecure.example.com/a.jpg"], "metadata": {"nested": {"a": 1}}})
    assert r.status_code == 400
    e = r.json()
    assert e["code"] == "validation_failed"
    assert [d["field"] for d in e["details"]] == ["recipientId", "content", "priority", "mediaUrls[0]", "metadata.nested"]
    r = send(edge, account(), {"recipientIds": [f"f{i}" for i in range(1001)], "content": "x"})
    assert [d["field"] for d in r.json()["details"]] == ["recipientIds"]


def test_bad_json_content_type_and_size(edge):
    creator = account()
    r = edge.call("POST", "/send", token(creator), data="{not json", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_json")
    r = edge.call("POST", "/send", token(creator), data="recipientId=a", headers={"content-type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type")
    big = '{"recipientId": "a", "content": "' + "x" * (300 * 1024) + '"}'
    r = edge.call("POST", "/send", token(creator), data=big, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (413, "body_too_large")


def test_idempotency_key_replays_the_first_answer(edge, emulator):
    creator = account()
    body = {"recipientId": "fan-1", "content": "only once"}
    first = send(edge, creator, body, headers={"idempotency-key": "order-123"})
    again = send(edge, creator, body, headers={"idempotency-key": "order-123"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    queued = emulator.queue_messages()
    assert len(queued[first.json()["messageId"]]) == 1
    assert len(emulator.items(creator)) == 1
    other = send(edge, creator, {"recipientId": "fan-2", "content": "different"}, headers={"idempotency-key": "order-123"})
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    # Keys are per account.
    assert send(edge, account(), body, headers={"idempotency-key": "order-123"}).json()["messageId"] != first.json()["messageId"]
    r = send(edge, creator, body, headers={"idempotency-key": "has spaces"})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "Idempotency-Key"


# ---- GET /{id}, GET /failed, POST /{id}/retry --------------------------------------

def test_get_message_is_scoped_to_its_account(edge):
    creator = account()
    mid = send(edge, creator, {"recipientId": "fan-7", "content": "look me up", "metadata": {"k": "v"}}).json()["messageId"]
    r = edge.call("GET", f"/{mid}", token(creator))
    assert r.status_code == 200
    v = r.json()
    assert (v["id"], v["status"], v["attempts"], v["recipientId"], v["content"]) == (mid, "queued", 0, "fan-7", "look me up")
    assert v["metadata"] == {"k": "v"} and v["sentAt"] is None and v["lastError"] is None
    for who, mid_ in [(account(), mid), (creator, "018bcfe5-6800-7fff-bfff-ffffffffffff"), (creator, "%23summary"), (creator, "not-an-id")]:
        r = edge.call("GET", f"/{mid_}", token(who))
        assert (r.status_code, r.json()["code"]) == (404, "not_found")


def failed_messages(edge, backend, emulator, creator, n):
    """`n` messages the real worker fails for good (the gateway refuses `fail-*` with
    400), one after another, so that each failed later than the one before."""
    ids = []
    with backend.running():
        for i in range(n):
            mid = send(edge, creator, {"recipientId": f"fail-{i}", "content": f"message {i}"}).json()["messageId"]
            wait_for(lambda: (emulator.item(creator, mid) or {}).get("status", {}).get("S") == "failed", 20, f"message {i} failed")
            ids.append(mid)
    return ids


def test_failed_lists_newest_first_with_pagination(edge, backend, emulator):
    creator = account()
    ids = failed_messages(edge, backend, emulator, creator, 3)
    send(edge, creator)  # a queued one is not listed
    page = edge.call("GET", "/failed?limit=2", token(creator)).json()
    assert [m["id"] for m in page["failedMessages"]] == [ids[2], ids[1]]
    assert page["total"] == 3 and page["nextCursor"]
    first = page["failedMessages"][0]
    item = emulator.item(creator, ids[2])
    assert first == {"id": ids[2], "recipientId": "fail-2", "content": "message 2", "failedAt": item["failedAt"]["S"],
                     "error": item["lastError"]["S"], "attempts": 1}
    assert "400" in first["error"] and abs(parse_time(first["failedAt"]).timestamp() - time.time()) < 60
    rest = edge.call("GET", "/failed", token(creator), params={"limit": 2, "cursor": page["nextCursor"]}).json()
    assert [m["id"] for m in rest["failedMessages"]] == [ids[0]] and rest["nextCursor"] is None
    assert edge.call("GET", "/failed", token(account())).json()["failedMessages"] == []
    bad = edge.call("GET", "/failed?limit=0&cursor=zzz", token(creator))
    assert bad.status_code == 400 and [d["field"] for d in bad.json()["details"]] == ["limit", "cursor"]


def test_failed_pages_end_exactly_and_cursors_belong_to_their_account(edge, backend, emulator):
    """Six messages failed together by the worker (often several in one millisecond):
    pages of 3 are two full pages and no cursor to an empty third; the largest limit
    (100) gives all, one past it is refused; another account's cursor is refused."""
    creator = account()
    r = send(edge, creator, {"recipientIds": [f"fail-{i}" for i in range(6)], "content": "x"})
    assert r.status_code == 202, r.text
    with backend.running():
        wait_for(lambda: [i["status"]["S"] for i in emulator.items(creator)] == ["failed"] * 6, 20, "six failed")
    items = emulator.items(creator)
    # Newest first; equal failedAt values in message id order, newest first.
    expected = [i["messageId"]["S"] for i in sorted(items, key=lambda i: (i["failedAt"]["S"], i["messageId"]["S"]), reverse=True)]
    tied = len(items) - len({i["failedAt"]["S"] for i in items})
    pages, cursor = [], None
    while True:
        p = edge.call("GET", "/failed", token(creator), params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        pages.append([m["id"] for m in p["failedMessages"]])
        cursor = p["nextCursor"]
        if not cursor:
            break
    assert pages == [expected[:3], expected[3:]], f"pages {pages} ({tied} equal failedAt values)"
    whole = edge.call("GET", "/failed?limit=100", token(creator)).json()
    assert [m["id"] for m in whole["failedMessages"]] == expected and whole["nextCursor"] is None
    over = edge.call("GET", "/failed?limit=101", token(creator))
    assert over.status_code == 400 and [d["field"] for d in over.json()["details"]] == ["limit"]
    cursor = edge.call("GET", "/failed?limit=3", token(creator)).json()["nextCursor"]
    stolen = edge.call("GET", "/failed", token(account()), params={"cursor": cursor})
    assert stolen.status_code == 400 and [d["field"] for d in stolen.json()["details"]] == ["cursor"]


def test_retry_requeues_a_failed_message_once(edge, backend, emulator):
    creator = account()
    [mid] = failed_messages(edge, backend, emulator, creator, 1)
    r = edge.call("POST", f"/{mid}/retry", token(creator))
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "messageId": mid, "status": "queued"}
    item = emulator.item(creator, mid)
    assert item["status"]["S"] == "queued" and item["attempts"]["N"] == "0" and item["generation"]["N"] == "1"
    assert "failedKey" not in item
    [q] = emulator.queue_messages()[mid][-1:]
    assert q["body"]["generation"] == 1 and q["body"]["recipientId"] == "fail-0"
    again = edge.call("POST", f"/{mid}/retry", token(creator))
    assert (again.status_code, again.json()["code"]) == (409, "not_retryable")
    assert edge.call("GET", "/failed", token(creator)).json()["failedMessages"] == []
    other = edge.call("POST", f"/{mid}/retry", token(account()))
    assert (other.status_code, other.json()["code"]) == (404, "not_found")


def test_concurrent_retries_queue_exactly_once(edge, backend, emulator):
    creator = account()
    [mid] = failed_messages(edge, backend, emulator, creator, 1)
    before = len(emulator.queue_messages().get(mid, []))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(lambda _: edge.call("POST", f"/{mid}/retry", token(creator)).status_code, range(6)))
    assert codes == [200, 409, 409, 409, 409, 409]
    assert len(emulator.queue_messages()[mid]) == before + 1


# ---- GET /status ----------------------------------------------------------------

def test_status_reports_queue_and_account_backlog(edge, backend, emulator):
    fresh = edge.call("GET", "/status", token(account())).json()
    assert account_counts(fresh) == {"backlog": 0, "sent": 0, "failed": 0, "paused": False} and fresh["processing"]["lastProcessedAt"] is None
    creator = held_backlog(edge, backend, emulator, 5)
    for _ in range(3):
        send(edge, creator)  # in the queue, not yet scheduled
    s = edge.call("GET", "/status", token(creator)).json()
    assert s["queue"]["depth"] >= 3 and s["queue"]["total"] >= s["queue"]["depth"]
    assert account_counts(s) == {"backlog": 4, "sent": 1, "failed": 0, "paused": False}
    # The window speaks of the edge's limit (10 a minute here), and holds the one send.
    w = s["account"]["window"]
    assert (w["limit"], w["windowMs"], w["sentInWindow"], len(w["recentSends"])) == (10, 60_000, 1, 1), w
    assert s["processing"]["rateLimit"] == "10 messages/minute"
    assert s["processing"]["estimatedTimeSeconds"] == 24
    [delivery] = backend.delivered(creator)
    assert abs(parse_time(s["processing"]["lastProcessedAt"]).timestamp() - parse_time(delivery["receivedAt"]).timestamp()) < 2
    # Healthy, unless this session's dead-letter queue holds something (then it says so).
    dead = s["queue"]["dlqCount"]
    want = {"status": "healthy", "message": "queue and ledger reachable"} if dead == 0 else {"status": "degraded", "message": f"{dead} message(s) in the dead-letter queue"}
    assert s["health"] == want, s["health"]
    dlq = emulator.sqs.get_queue_attributes(QueueUrl=emulator.aws.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert int(dlq["ApproximateNumberOfMessages"]) == dead, "the count is the dead-letter queue's own"
    assert abs(parse_time(s["timestamp"]).timestamp() - time.time()) < 30


# ---- CORS and API-call limit --------------------------------------------------------

def test_cors_preflight_and_headers(edge):
    pre = edge.call("OPTIONS", "/send", headers={"origin": ORIGIN, "access-control-request-method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "idempotency-key" in pre.headers["access-control-allow-headers"]
    denied = edge.call("OPTIONS", "/send", headers={"origin": "https://evil.example.com", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in denied.headers
    r = edge.call("GET", "/health", headers={"origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN


def within_one_limiter_minute():
    """`wrangler dev` counts API calls in fixed minutes of the clock (its simulator of
    the rate-limiting binding): start a counting test early in one, so that it does not
    straddle two."""
    into = time.time() % 60
    if into > 40:
        time.sleep(60 - into + 0.1)


def test_api_calls_per_account_are_limited(edge):
    within_one_limiter_minute()
    creator = account()
    # Sends and retries share the send limiter (60 a minute): 30 of each, then any is refused.
    codes = [edge.call("POST", "/send", token(creator), json_body={}).status_code for _ in range(30)]
    codes += [edge.call("POST", "/not-an-id/retry", token(creator)).status_code for _ in range(30)]
    assert codes == [400] * 30 + [404] * 30  # counted, then refused by validation
    for r in (edge.call("POST", "/send", token(creator), json_body={}), edge.call("POST", "/not-an-id/retry", token(creator))):
        assert (r.status_code, r.json()["code"]) == (429, "too_many_requests")
        assert int(r.headers["retry-after"]) > 0
    # Reads have their own limiter (600 a minute), untouched by the sends.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        reads = list(pool.map(lambda _: edge.call("GET", "/failed?limit=0", token(creator)).status_code, range(600)))
    assert reads == [400] * 600
    r = edge.call("GET", "/failed?limit=0", token(creator))
    assert (r.status_code, r.json()["code"]) == (429, "too_many_requests")
    assert send(edge, account()).status_code == 202  # other accounts are not held back


def test_concurrent_requests_with_one_idempotency_key_queue_once(edge, emulator):
    creator = account()
    body = {"recipientId": "fan-1", "content": "once, however many ask"}
    key = {"idempotency-key": "parallel-1"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: send(edge, creator, body, headers=key), range(8)))
    accepted = [a for a in answers if a.status_code == 202]
    assert accepted and all(a.status_code == 202 or (a.status_code, a.json()["code"]) == (409, "idempotency_key_in_use") for a in answers)
    assert len({a.json()["messageId"] for a in accepted}) == 1, "every 202 is the same answer"
    mid = accepted[0].json()["messageId"]
    assert [i["messageId"]["S"] for i in emulator.items(creator)] == [mid]
    assert len(emulator.queue_messages()[mid]) == 1
    assert send(edge, creator, body, headers=key).json()["messageId"] == mid


def test_an_expired_idempotency_key_queues_anew(edge, emulator):
    """DynamoDB deletes an expired record up to two days late: the edge must treat it
    as gone. The record's TTL is moved into the past, as time would."""
    creator = account()
    body = {"recipientId": "fan-1", "content": "daily digest"}
    key = {"idempotency-key": "digest-1"}
    first = send(edge, creator, body, headers=key).json()["messageId"]
    emulator.ddb.update_item(TableName=emulator.aws.table, Key={"creatorId": {"S": creator}, "messageId": {"S": "#idem#digest-1"}},
                             UpdateExpression="SET #t = :past", ExpressionAttributeNames={"#t": "ttl"}, ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}})
    again = send(edge, creator, body, headers=key)
    assert again.status_code == 202 and again.headers.get("idempotent-replayed") is None
    assert again.json()["messageId"] != first
    assert sorted(i["messageId"]["S"] for i in emulator.items(creator)) == sorted([first, again.json()["messageId"]])


def test_a_thousand_recipients_end_to_end(edge, backend, emulator):
    """The largest mass send: accepted in one request, each recipient delivered once by
    the real worker and recorded as sent."""
    creator = account()
    fans = [f"fan-{i}" for i in range(1000)]
    r = send(edge, creator, {"recipientIds": fans, "content": "to everyone"})
    assert r.status_code == 202, r.text
    a = r.json()
    assert a["count"] == 1000 and [m["queuePosition"] for m in a["messages"]] == list(range(1, 1001))
    ids = {m["messageId"] for m in a["messages"]}
    assert len(ids) == 1000
    with backend.running():
        wait_for(lambda: len(backend.delivered(creator)) >= 1000, 90, "1,000 delivered")
        wait_for(lambda: sum(i["status"]["S"] == "sent" for i in emulator.items(creator)) == 1000, 60, "1,000 recorded as sent")
    delivered = [d["messageId"] for d in backend.delivered(creator)]
    assert sorted(delivered) == sorted(ids), "each once"
    assert sorted(d["recipientId"] for d in backend.delivered(creator)) == sorted(fans)


# ---- failure modes: separate edges with other settings -------------------------------

def test_a_missing_or_bad_setting_gives_503_not_configured_naming_it(aws):
    settings = edge_settings(aws, JWT_SECRET="short", RATE_LIMIT_WINDOW="soon")
    del settings["SQS_RATE_LIMITER_QUEUE_URL"]
    part, bad = start_edge("edge-not-configured", settings)
    try:
        assert bad.call("GET", "/health").status_code == 200
        for method, path in (("POST", "/send"), ("GET", "/status"), ("GET", "/failed")):
            r = bad.call(method, path, token(account()), json_body={"recipientId": "fan-1", "content": "x"} if method == "POST" else None)
            assert (r.status_code, r.json()["code"]) == (503, "not_configured"), r.text
            text = r.text
            for name in ("SQS_RATE_LIMITER_QUEUE_URL", "JWT_SECRET", "RATE_LIMIT_WINDOW"):
                assert name in text, text
            assert "short" not in text and "soon" not in text, "never a setting's value"
    finally:
        part.stop()


def test_wrong_aws_secret_gives_503_and_queues_nothing(aws, emulator):
    part, bad = start_edge("edge-wrong-secret", edge_settings(aws, AWS_SECRET_ACCESS_KEY="wrong" + aws.secret_access_key[5:]))
    try:
        creator = account()
        r = send(bad, creator)
        assert r.status_code == 503
        assert r.json() == {"error": "The queue or the ledger cannot be reached", "code": "upstream_unavailable"}
        assert aws.secret_access_key[5:] not in r.text and aws.access_key_id not in r.text
        assert bad.call("GET", "/status", token(creator)).status_code == 503
        sent_by_creator = [m for ms in emulator.queue_messages().values() for m in ms if m["body"].get("creatorId") == creator]
        assert sent_by_creator == [] and emulator.items(creator) == []
    finally:
        part.stop()


def test_rate_limiter_disabled_refuses_to_queue(aws, edge, backend, emulator):
    creator = account()
    [mid] = failed_messages(edge, backend, emulator, creator, 1)
    part, off = start_edge("edge-disabled", edge_settings(aws, RATE_LIMITER_ENABLED="false"))
    try:
        r = send(off, creator)
        assert (r.status_code, r.json()["code"]) == (503, "rate_limiter_disabled")
        r = off.call("POST", f"/{mid}/retry", token(creator))
        assert (r.status_code, r.json()["code"]) == (503, "rate_limiter_disabled")
        s = off.call("GET", "/status", token(creator)).json()
        assert s["health"]["status"] == "degraded" and "RATE_LIMITER_ENABLED" in s["health"]["message"]
        assert emulator.item(creator, mid)["status"]["S"] == "failed"
    finally:
        part.stop()


def test_jwks_refetches_stay_throttled_after_a_failed_fetch(edge, jwks, emulator):
    """Tokens with unknown kids (which need no valid signature) must not make the edge
    fetch the JWKS again after a failed fetch, nor many at once."""
    _, key = jwks.keys["ec-1"]
    forged = lambda i: jwt.encode({"sub": "x", "exp": int(time.time()) + 600}, key, algorithm="ES256", headers={"kid": f"nope-{i}"})
    assert edge.call("GET", "/status", jwks.token("rsa-1", account())).status_code == 200  # the keys are loaded
    time.sleep(1.1)  # the refresh interval is 1 s here: let any earlier fetch age out
    jwks.failing = True
    try:
        start, t0 = jwks.fetches, time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(lambda i: edge.call("GET", "/status", forged(i)).status_code, range(10)))
        codes += [edge.call("GET", "/status", forged(100 + i)).status_code for i in range(10)]
        elapsed = time.monotonic() - t0
        fetched = jwks.fetches - start
        assert set(codes) == {401}
        assert 1 <= fetched <= int(elapsed / 1.0) + 1, f"{fetched} JWKS fetches for 20 unknown kids in {elapsed:.2f}s (interval 1 s)"
        # The outage keeps the keys it knew: a token of a known key still passes, as its account.
        known = account()
        r = edge.call("POST", "/send", jwks.token("rsa-1", known), json_body={"recipientId": "fan-1", "content": "hi"})
        assert r.status_code == 202, r.text
        assert emulator.item(known, r.json()["messageId"]), "queued for the token's account"
    finally:
        jwks.failing = False


@pytest.fixture(scope="module")
def faulty(aws):
    """An edge whose AWS calls go through a fault proxy."""
    proxy = FaultProxy(aws.endpoint)
    part, e = start_edge("edge-faults", edge_settings(aws, AWS_ENDPOINT_URL=proxy.url, IDEMPOTENCY_LEASE_SECONDS="2"))
    yield e, proxy
    part.stop()
    proxy.stop()


def test_a_retry_whose_ledger_answer_was_lost_still_queues(faulty, backend, emulator):
    """A retry whose update committed and whose answer was lost recognises its own write
    when it is tried again (not a 409 with nothing queued)."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    [mid] = failed_messages(edge, backend, emulator, creator, 1)
    proxy.fail("retriedAt", mode="lose", count=1)
    r = edge.call("POST", f"/{mid}/retry", token(creator))
    assert proxy.hits, "the answer was lost"
    assert r.status_code == 200, r.text
    assert [q["body"]["generation"] for q in emulator.queue_messages()[mid]][-1:] == [1]
    assert emulator.item(creator, mid)["status"]["S"] == "queued"


def queue_drained(emulator) -> bool:
    a = emulator.sqs.get_queue_attributes(QueueUrl=emulator.aws.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in a["Attributes"].values()) == 0


def test_a_retry_whose_queue_answer_was_lost_goes_back_to_failed_and_its_copy_is_never_counted(faulty, backend, emulator):
    """The queue took the retry but its answer was lost: the edge answers the error and
    puts the message back to failed, so it stays retryable. The copy the queue kept is
    taken by the worker later: it must not count it into the backlog (the account
    showed a backlog of 1 and one failed fewer for ever, seed 875842157) nor send it."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    [mid] = failed_messages(edge, backend, emulator, creator, 1)
    proxy.fail("AmazonSQS.SendMessage", mode="lose")  # each of the edge's attempts
    r = edge.call("POST", f"/{mid}/retry", token(creator))
    proxy.clear_rules()
    assert proxy.hits, "the queue's answers were lost"
    assert r.status_code >= 500, r.text
    with backend.running():
        wait_for(lambda: queue_drained(emulator), 20, "the worker took the queue's copy")
        time.sleep(1)  # what it would do with it, it does now
    item = emulator.item(creator, mid)
    assert (item["status"]["S"], item["generation"]["N"], item["attempts"]["N"]) == ("failed", "1", "1"), item
    assert account_counts(edge.call("GET", "/status", token(creator)).json()) == {"backlog": 0, "sent": 0, "failed": 1, "paused": False}
    assert [m["id"] for m in edge.call("GET", "/failed", token(creator)).json()["failedMessages"]] == [mid], "still listed, retryable"
    assert edge.call("POST", f"/{mid}/retry", token(creator)).status_code == 200


def test_a_retry_undone_whose_undo_answer_was_lost_still_fails(faulty, backend, emulator):
    """The undo of a retry whose queue write failed, applied but its answer lost, is
    tried again by the edge and refused by its own write: that is not a worker that took
    the message (the retry must fail, not answer `queued` for a message left failed)."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    [mid] = failed_messages(edge, backend, emulator, creator, 1)
    proxy.fail("AmazonSQS.SendMessage", mode="error")  # each of the edge's attempts
    proxy.fail("undoneGen = :gen", mode="lose", count=1)
    r = edge.call("POST", f"/{mid}/retry", token(creator))
    proxy.clear_rules()
    assert ("lose", "undoneGen = :gen") in proxy.hits, "the undo's answer was lost"
    assert r.status_code >= 500, r.text
    item = emulator.item(creator, mid)
    assert (item["status"]["S"], item["undoneGen"]["N"]) == ("failed", "1"), item
    assert edge.call("POST", f"/{mid}/retry", token(creator)).status_code == 200, "retryable again"


def test_a_retry_whose_queue_answer_was_lost_but_a_worker_took_it_is_accepted(faulty, backend, emulator):
    """The queue took the retry, its answer was lost, and a worker counted the copy
    before the edge could put the message back: the retry went through (200), and the
    worker's outcome stands alone (not a failed message still counted as waiting)."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    [mid] = failed_messages(edge, backend, emulator, creator, 1)
    with backend.running():
        proxy.fail("AmazonSQS.SendMessage", mode="lose")  # each of the edge's attempts
        proxy.fail("undoneGen = :gen", mode="delay", delay=4, count=1)  # the edge's undo, after the worker's count
        r = edge.call("POST", f"/{mid}/retry", token(creator))
        proxy.clear_rules()
        assert ("delay", "undoneGen = :gen") in proxy.hits, "the undo was tried"
        assert r.status_code == 200, r.text
        wait_for(lambda: queue_drained(emulator) and emulator.item(creator, mid)["status"]["S"] == "failed", 20, "the retried generation failed again")
    item = emulator.item(creator, mid)
    assert (item["status"]["S"], item["generation"]["N"]) == ("failed", "1"), item
    assert account_counts(edge.call("GET", "/status", token(creator)).json()) == {"backlog": 0, "sent": 0, "failed": 1, "paused": False}


def test_a_message_whose_item_write_failed_is_written_and_counted_once_by_the_worker(faulty, backend, emulator):
    """Should the edge's write of a message's item fail, the message is still accepted
    (the queue has it): the worker writes the item when it takes the message (its
    count, tried at once with that check, is refused until then) and counts it once."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    with backend.running():
        proxy.fail('"waitShard"', mode="error", count=10)  # the item's put and its retries, not the body's
        r = send(edge, creator, {"recipientId": "fan-item", "content": "written by the worker"})
        proxy.clear_rules()
        assert r.status_code == 202, r.text
        assert proxy.hits, "the item's write failed"
        mid = r.json()["messageId"]
        wait_for(lambda: (emulator.item(creator, mid) or {}).get("status", {}).get("S") == "sent", 20, "the message sent")
    assert emulator.item(creator, mid)["countedGen"]["N"] == "0"
    assert account_counts(edge.call("GET", "/status", token(creator)).json()) == {"backlog": 0, "sent": 1, "failed": 0, "paused": False}


def test_a_message_whose_body_write_failed_gets_it_from_the_worker(faulty, backend, emulator):
    """The edge writes a message's item and its body apart (two plain writes at once,
    not a transaction that bills each twice): should the body's fail, the message is
    still accepted, and the worker writes the body when it takes the message (a
    rebuild of the schedule reads the content from it)."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    with backend.running():
        proxy.fail("#body#", mode="error", count=10)  # its retries too
        r = send(edge, creator, {"recipientId": "fan-body", "content": "kept anyway"})
        assert r.status_code == 202, r.text
        assert proxy.hits, "the body's write failed"
        mid = r.json()["messageId"]
        wait_for(lambda: (emulator.item(creator, mid) or {}).get("status", {}).get("S") == "sent", 20, "the message sent")
    assert emulator.item(creator, f"#body#{mid}")["content"]["S"] == "kept anyway"


def test_an_idempotency_claim_whose_answer_was_lost_is_still_ours(faulty, emulator):
    """An idempotency claim whose put committed and whose answer was lost is recognised
    as this request's own when tried again (not another request in progress: 409 for
    the key's whole TTL)."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    body = {"recipientId": "fan-1", "content": "hello"}
    proxy.fail('"pending"', mode="lose", count=1)
    r = edge.call("POST", "/send", token(creator), body, headers={"Idempotency-Key": "lost-answer-1"})
    assert proxy.hits, "the answer was lost"
    assert r.status_code == 202, r.text
    replay = edge.call("POST", "/send", token(creator), body, headers={"Idempotency-Key": "lost-answer-1"})
    assert (replay.status_code, replay.json()["messageId"]) == (202, r.json()["messageId"])


def chunked_upload(edge, headers, chunks):
    """POSTs /send with a chunked body (no Content-Length, as a streamed upload or
    HTTP/2 sends it) and returns the status. `wrangler dev` answers only once the upload
    has ended, so this checks the answers; tests/body.rs and js/glue.test.mjs check that
    the body is read after the token and no further than the limit."""
    import socket
    from urllib.parse import urlsplit
    u = urlsplit(edge.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        head = f"POST {BASE}/send HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        for c in chunks:
            sock.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        return int(sock.recv(64).split(b" ")[1])


def test_a_chunked_body_without_a_token_or_past_the_limit_is_refused(aws):
    """The body is read only after the token and only to the limit, as seen from
    outside. An edge of its own: once the edge stops
    reading an upload part way (past the limit, or without a token), `wrangler dev`'s
    proxy may fail the next request on that connection ("Your worker restarted
    mid-request"), so the over-limit upload is this edge's last request."""
    part, edge = start_edge("edge-bodies", edge_settings(aws))
    try:
        creator = account()
        within = [b'{"recipientId": "fan-1", ', b'"content": "hello"}']
        assert chunked_upload(edge, {"Authorization": f"Bearer {token(creator)}"}, within) == 202
        assert chunked_upload(edge, {}, [b"{" + b" " * 1000]) == 401
        # The 401 left that upload unread, and `wrangler dev` may fail the request after
        # it (503, once in a CI run): a throwaway request takes that.
        edge.call("GET", "/health")
        over = [b"{" + b" " * (64 * 1024 - 1)] * 5  # 320 KiB, past the 256 KiB limit
        assert chunked_upload(edge, {"Authorization": f"Bearer {token(creator)}"}, over) == 413
    finally:
        part.stop()


def test_a_pending_claim_is_taken_over_after_its_lease_with_the_same_ids(faulty, emulator):
    """When storing the answer fails (or the request is cancelled), the claim must not
    stay pending for the key's whole TTL (409 for every try, the client never learning
    what was queued). Here storing the answer fails all three tries."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    body = {"recipientIds": ["fan-1", "fan-2"], "content": "hello"}
    key = {"Idempotency-Key": "stuck-1"}
    proxy.fail('":done"', count=3)
    first = edge.call("POST", "/send", token(creator), body, headers=key)
    assert first.status_code == 202, first.text
    assert len(proxy.hits) == 3, "the answer was not stored"
    ids = [m["messageId"] for m in first.json()["messages"]]
    busy = edge.call("POST", "/send", token(creator), body, headers=key)
    assert (busy.status_code, busy.json()["code"]) == (409, "idempotency_key_in_use"), "within the lease"
    time.sleep(2.2)  # the lease (IDEMPOTENCY_LEASE_SECONDS=2 here)
    resumed = edge.call("POST", "/send", token(creator), body, headers=key)
    assert resumed.status_code == 202, resumed.text
    assert [m["messageId"] for m in resumed.json()["messages"]] == ids, "the same messages, not new ones"
    replay = edge.call("POST", "/send", token(creator), body, headers=key)
    assert replay.headers.get("idempotent-replayed") == "true" and replay.json() == resumed.json()
    cid = first.json()["campaignId"]
    assert resumed.json()["campaignId"] == cid and emulator.campaign(creator, cid) is not None
    assert len(emulator.queue_messages()[cid]) == 2, "queued again under the same id (the worker drops the repeat)"


def test_a_campaign_the_queue_refuses_is_answered_503_and_leaves_nothing(faulty, emulator):
    """The campaign's item is written first; when the queue then refuses to name it,
    the item is removed again: nothing is left that no worker would ever send."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    proxy.fail('"campaign\\":')  # the SQS body naming the campaign, as SendMessage quotes it
    try:
        r = send(edge, creator, {"recipientIds": ["fan-1", "fan-2"], "content": "never"})
    finally:
        proxy.clear()
    assert (r.status_code, r.json()["code"]) == (503, "upstream_unavailable"), r.text
    assert "amazon" not in r.text.lower() and "sqs" not in r.text.lower()
    assert edge.call("GET", "/campaigns", token(creator)).json()["campaigns"] == []


def test_a_mass_message_costs_the_edge_the_same_as_one(faulty, emulator):
    """AWS calls the edge makes for 1 and for 1,000 recipients: a campaign's head and
    body and one queue message (and the account's summary when not read within the
    second)."""
    edge, proxy = faulty
    proxy.clear()
    creator = account()
    calls = {}
    for n in (1, 1000):
        before = len(proxy.calls)
        body = {**({"recipientIds": [f"fan-{i}" for i in range(n)]} if n > 1 else {"recipientId": "fan-0"}), "content": "x" * 2000}
        assert send(edge, creator, body).status_code == 202
        calls[n] = proxy.calls[before:]
    assert len(calls[1000]) <= 4 and len(calls[1000]) <= len(calls[1]) + 1, calls


def test_openapi_describes_every_route_and_every_answer_matches_it(edge, emulator):
    """`GET /openapi.json` (no token): OpenAPI 3.1 with every route; then one request of
    each kind, success and error, each answered with a status the description lists for
    it and a body that matches its schema (JSON Schema 2020-12, as OpenAPI 3.1 says)."""
    from jsonschema import Draft202012Validator
    r = edge.call("GET", "/openapi.json")
    assert r.status_code == 200, r.text
    spec = r.json()
    assert spec["openapi"] == "3.1.0" and spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(spec["paths"]) == {"/health", "/test", "/openapi.json", "/send", "/status", "/failed", "/account/pause", "/account/resume",
                                  "/account/vendor", "/campaigns", "/campaigns/{id}", "/{id}", "/{id}/retry",
                                  "/webhooks", "/webhooks/{id}", "/webhooks/{id}/rotate", "/webhooks/{id}/enable", "/webhooks/{id}/test",
                                  "/webhooks/{id}/deliveries", "/webhooks/{id}/deliveries/{eventId}/redeliver"}

    def check(response, path, method):
        responses = spec["paths"][path][method]["responses"]
        status = str(response.status_code)
        assert status in responses, f"{method.upper()} {path} answered {status}, not described"
        schema = {**responses[status]["content"]["application/json"]["schema"], "components": spec["components"]}
        errors = [e.message for e in Draft202012Validator(schema).iter_errors(response.json())]
        assert not errors, f"{method.upper()} {path} {status}: {errors[:3]}"
        return response.json()

    creator, other = account(), account()
    tok = token(creator)
    check(edge.call("GET", "/health"), "/health", "get")
    one = check(send(edge, creator), "/send", "post")
    mass = check(send(edge, creator, {"recipientIds": ["a", "b", "c"], "content": "x", "priority": 2}), "/send", "post")
    check(send(edge, creator, {"recipientId": "", "content": 7}), "/send", "post")
    check(edge.call("POST", "/send", None, {"recipientId": "a", "content": "x"}), "/send", "post")
    check(edge.call("POST", "/send", tok, data="x", headers={"content-type": "text/plain"}), "/send", "post")
    check(edge.call("PUT", "/send", tok), "/send", "post")
    check(edge.call("GET", f"/{one['messageId']}", tok), "/{id}", "get")
    check(edge.call("GET", f"/{mass['messages'][1]['messageId']}", tok), "/{id}", "get")
    check(edge.call("GET", f"/{one['messageId']}", token(other)), "/{id}", "get")
    check(edge.call("POST", f"/{one['messageId']}/retry", tok), "/{id}/retry", "post")
    check(edge.call("DELETE", f"/{one['messageId']}", tok), "/{id}", "delete")
    check(edge.call("GET", f"/campaigns/{mass['campaignId']}", tok), "/campaigns/{id}", "get")
    check(edge.call("GET", "/campaigns?limit=1", tok), "/campaigns", "get")
    check(edge.call("GET", "/campaigns?limit=0", tok), "/campaigns", "get")
    check(edge.call("DELETE", f"/campaigns/{mass['campaignId']}", tok), "/campaigns/{id}", "delete")
    check(edge.call("GET", "/status", tok), "/status", "get")
    check(edge.call("GET", "/failed", tok), "/failed", "get")
    check(edge.call("POST", "/account/pause", tok), "/account/pause", "post")
    check(edge.call("POST", "/account/resume", tok), "/account/resume", "post")
    assert check(edge.call("PUT", "/account/vendor", tok, {"vendorAccountId": "acct_0a1b2c"}), "/account/vendor", "put") == {"vendorAccountId": "acct_0a1b2c"}
    assert edge.call("GET", "/status", tok).json()["account"]["vendorAccountId"] == "acct_0a1b2c"
    bad = check(edge.call("PUT", "/account/vendor", tok, {"vendorAccountId": "../admin"}), "/account/vendor", "put")
    assert [d["field"] for d in bad["details"]] == ["vendorAccountId"], bad
    assert check(edge.call("PUT", "/account/vendor", tok, {"vendorAccountId": None}), "/account/vendor", "put") == {"vendorAccountId": None}
    assert "vendorAccountId" not in check(edge.call("GET", "/status", tok), "/status", "get")["account"]
    hook = check(edge.call("POST", "/webhooks", tok, {"url": "https://crm.example.com/hooks", "events": ["message.sent"]}), "/webhooks", "post")
    check(edge.call("POST", "/webhooks", tok, {"url": "https://10.0.0.1/hooks"}), "/webhooks", "post")
    check(edge.call("GET", "/webhooks", tok), "/webhooks", "get")
    check(edge.call("POST", f"/webhooks/{hook['id']}/rotate", tok), "/webhooks/{id}/rotate", "post")
    check(edge.call("POST", f"/webhooks/{hook['id']}/test", tok), "/webhooks/{id}/test", "post")
    check(edge.call("POST", f"/webhooks/{hook['id']}/enable", tok), "/webhooks/{id}/enable", "post")
    check(edge.call("POST", f"/webhooks/{hook['id']}/test", token(other)), "/webhooks/{id}/test", "post")
    assert check(edge.call("GET", f"/webhooks/{hook['id']}/deliveries", tok), "/webhooks/{id}/deliveries", "get") == {"deliveries": []}
    check(edge.call("GET", f"/webhooks/{hook['id']}/deliveries?limit=0", tok), "/webhooks/{id}/deliveries", "get")
    check(edge.call("POST", f"/webhooks/{hook['id']}/deliveries/evt_none/redeliver", tok), "/webhooks/{id}/deliveries/{eventId}/redeliver", "post")
    deleted = edge.call("DELETE", f"/webhooks/{hook['id']}", tok)
    assert deleted.status_code == 204 and not deleted.content and "204" in spec["paths"]["/webhooks/{id}"]["delete"]["responses"]
    check(edge.call("DELETE", f"/webhooks/{hook['id']}", tok), "/webhooks/{id}", "delete")
