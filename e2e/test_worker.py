"""The native worker with real parts: Redis, the AWS emulator (signatures checked, the
worker's own IAM user), the stand-in gateway, several worker processes, and the edge
under `wrangler dev`, through which every test queues its messages (only SQS's own
behaviour, such as a message delivered twice, is reproduced by hand, with the edge's
real messages). The limit is compressed to 10 per 2 s so each rule is checked in
seconds. Measured figures are appended to target/e2e-logs/figures.jsonl."""

import email.utils
import json
import os
import signal
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest

from harness import (
    CLAIM_LEAD_MS, LOGS, MAX, SPACING_MS, WINDOW_MS, System, edge_settings, fans, figure, max_in_window, ms, rebuilds, span_bound, start_edge,
    stop_all, summary, token, wait_statuses,
)
from harness import wait_for as wait_until
from devstack import stack
from devstack.faultproxy import FaultProxy

@pytest.fixture(scope="module")
def system():
    s = System()
    yield s
    s.stop()


# A window of 4 s here (spacing 400 ms): a send taken more than a twentieth of the
# spacing late counts from when it went, so at 200 ms spacing the dispatch delays of a
# loaded 2-vCPU machine (10 ms and more) already cost more than the 1% this allows.
EXACT_WINDOW_MS = 4000


def test_exact_limit_across_three_workers(system):
    accounts = [f"acct-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    workers = system.start_workers("limit", n=3, RATE_LIMIT_WINDOW=f"{EXACT_WINDOW_MS}ms")
    try:
        ids = [i for a in accounts for i in system.send(a, fans(a, 30))]
        system.wait_delivered(ids, timeout=90)
    finally:
        stop_all(workers)
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    assert len(delivered) == len(set(delivered)) == 600, "each message delivered exactly once"
    ideal_ms = 29 * EXACT_WINDOW_MS / MAX
    bound = span_bound(30, EXACT_WINDOW_MS)
    worst, spans = 0, []
    for a in accounts:
        times = sorted(ms(d["receivedAt"]) for d in got if d["accountId"] == a)
        worst = max(worst, max_in_window(times, EXACT_WINDOW_MS))
        spans.append((times[-1] - times[0]) / ideal_ms)
    figure("exact_limit_3_workers", accounts=20, per_account=30, worst_window_count=worst,
           span_vs_ideal_max=round(max(spans), 4), span_vs_ideal_median=round(sorted(spans)[10], 4), span_bound=round(bound, 4))
    assert worst <= MAX, f"{worst} deliveries in one rolling {EXACT_WINDOW_MS} ms window"
    # 1.0272: the old margin on every spacing (1.25), or one idle slot (1.017 + 0.034), fails it.
    assert max(spans) <= bound, f"slowest account took {max(spans):.4f}x the ideal (bound {bound:.4f})"
    sample = system.emulator.items(accounts[0])
    assert len(sample) == 30 and all(i["status"]["S"] == "sent" and i["attempts"]["N"] == "1" for i in sample)


def scheduled(system, prefix, account):
    """Messages of `account` queued (a campaign's counted from its list) or leased in the schedule."""
    script = """local n = redis.call('ZCARD', KEYS[2])
        for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          if string.sub(m, 1, 1) == '~' then n = n + redis.call('LLEN', ARGV[1] .. 'cr:' .. string.sub(m, 2)) else n = n + 1 end
        end
        return n"""
    return system.redis_count("EVAL", script, "2", f"{prefix}:q:{account}", f"{prefix}:leases", f"{prefix}:")


def test_busy_account_does_not_delay_another(system):
    busy, quiet = f"busy-{uuid.uuid4().hex[:8]}", f"quiet-{uuid.uuid4().hex[:8]}"
    workers = system.start_workers("fair")
    try:
        system.send(busy, fans(busy, 500))
        # Until all 500 are in the schedule (queued, leased or sent) and flowing.
        wait_until(lambda: len(system.deliveries({busy})) >= 5 and scheduled(system, "fair", busy) + len(system.deliveries({busy})) >= 500,
                   20, "the busy account scheduled and flowing")
        sent_at = time.time() * 1000
        [mid] = system.send(quiet, ["fan-1"])
        system.wait_delivered([mid], timeout=10)
        latency = ms(system.deliveries({quiet})[0]["receivedAt"]) - sent_at
    finally:
        stop_all(workers)
        system.sqs.purge_queue(QueueUrl=system.aws.queue_url)
    figure("fairness", quiet_account_latency_ms=round(latency), spacing_ms=SPACING_MS)
    # Within a spacing, plus the lead every message is taken ahead of its slot to claim it
    # in the ledger first (CLAIM_LEAD): not behind the busy account's 500.
    assert latency <= SPACING_MS + CLAIM_LEAD_MS, f"the quiet account waited {latency:.0f} ms behind 500 queued messages"


def test_priority_then_age_within_an_account(system):
    account = f"prio-{uuid.uuid4().hex[:8]}"
    priorities = [5, 10, 1, 5, 1, 10, 3, 5]
    ids = [system.send(account, [f"fan-{i}"], priority=p)[0] for i, p in enumerate(priorities)]  # all queued before any worker runs
    workers = system.start_workers("prio")
    try:
        system.wait_delivered(ids, timeout=30)
    finally:
        stop_all(workers)
    order = [d["messageId"] for d in system.deliveries({account})]
    expected = [i for _, i in sorted(zip(priorities, ids))]  # ids grow with acceptance
    assert order == expected, [priorities[ids.index(i)] for i in order]


@pytest.mark.parametrize("http_date", [False, True], ids=["seconds", "http-date"])
def test_a_429_pauses_only_its_account_for_retry_after(system, http_date):
    """At the default burst of 1: one 429 with `Retry-After` (2 s, or an HTTP date 2–3 s
    ahead) and that account sends nothing until then, uses no attempt and then resumes;
    another account keeps its pace meanwhile."""
    tag = uuid.uuid4().hex[:8]
    paused, other = f"paused-{tag}", f"other-{tag}"
    if http_date:
        until = int(time.time()) + 3
        retry_after = email.utils.formatdate(until, usegmt=True)
    else:
        retry_after = 2
    system.control("POST", "/_control/failures", {"recipientPattern": f"p{tag}-fan-2", "status": 429, "count": 1, "retryAfter": retry_after})
    workers = system.start_workers("pause")
    try:
        ids = system.send(paused, fans(f"p{tag}", 6)) + system.send(other, fans(f"o{tag}", 30))
        system.wait_delivered(ids, timeout=30)
    finally:
        stop_all(workers)
        system.control("DELETE", "/_control/failures")
    [refusal] = system.refused(f"p{tag}-fan-2")
    at = ms(refusal["receivedAt"])
    resume_at = until * 1000 if http_date else at + 2000
    after = sorted(ms(d["receivedAt"]) for d in system.deliveries({paused}) if ms(d["receivedAt"]) > at)
    others = [ms(d["receivedAt"]) for d in system.deliveries({other})]
    during = [x for x in others if at < x < resume_at]
    figure("pause_429", http_date=http_date, paused_for_ms=round(after[0] - at), other_sends_meanwhile=len(during))
    assert len(after) == 4, "the refused message and the three after it"
    assert after[0] >= resume_at - 2, f"sent {resume_at - after[0]:.0f} ms before Retry-After ended"
    assert after[0] <= resume_at + 2 * SPACING_MS, f"resumed {after[0] - resume_at:.0f} ms after Retry-After ended"
    # The other account keeps one send per spacing (less one for the edges of the pause).
    assert len(during) >= (resume_at - at) / SPACING_MS - 2, f"{len(during)} sends of the other account during the pause"
    item = system.emulator.item(paused, ids[2])
    assert (item["status"]["S"], item["attempts"]["N"]) == ("sent", "1"), "a 429 uses no attempt"


def test_a_scheduled_send_waits_for_send_at_then_keeps_the_limit(system):
    """`sendAt` (given with a +02:00 offset): the answer says `scheduled` with estimates
    at or after it; nothing of it is sent before it while the account's unscheduled
    message goes at once; from `sendAt` the five go one spacing apart (no burst)."""
    from datetime import timedelta
    tag = uuid.uuid4().hex[:8]
    account = f"sched-{tag}"
    edge, tok = system.edge(), token(account)
    send_at_ms = int(time.time() * 1000) + 4000
    local = datetime.fromtimestamp(send_at_ms / 1000, timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")
    workers = system.start_workers("sched")
    try:
        r = edge.call("POST", "/send", tok, {"recipientIds": fans(tag, 5), "content": "later", "sendAt": local})
        assert r.status_code == 202, r.text
        a = r.json()
        assert a["status"] == "scheduled" and all(m["status"] == "scheduled" for m in a["messages"])
        for i, m in enumerate(a["messages"]):
            assert ms(m["estimatedSendTime"]) >= send_at_ms + i * SPACING_MS, (i, m["estimatedSendTime"], local)
        ids = [m["messageId"] for m in a["messages"]]
        view = edge.call("GET", f"/{ids[0]}", tok).json()
        assert view["status"] == "scheduled" and ms(view["sendAt"]) == send_at_ms
        [now_id] = system.send(account, ["now-fan"])
        system.wait_delivered([now_id], timeout=10)
        assert ms(system.deliveries({account})[0]["receivedAt"]) < send_at_ms, "the unscheduled message is not held back"
        system.wait_delivered(ids, timeout=20)
        wait_until(lambda: edge.call("GET", f"/{ids[-1]}", tok).json()["status"] == "sent", 10, "recorded as sent")
    finally:
        stop_all(workers)
    times = sorted(ms(d["receivedAt"]) for d in system.deliveries({account}) if d["messageId"] in ids)
    figure("scheduled_send", first_after_send_at_ms=round(times[0] - send_at_ms), gaps_ms=[round(b - a) for a, b in zip(times, times[1:])])
    assert times[0] >= send_at_ms, f"sent {send_at_ms - times[0]:.0f} ms before sendAt"
    # About one spacing apart at the gateway (a burst would be back to back; delivery
    # jitter moves single sends by tens of ms), and never more than the limit.
    assert all(b - a >= SPACING_MS / 2 for a, b in zip(times, times[1:])), times
    assert max_in_window(times, WINDOW_MS) <= MAX
    for body, field_ok in (({"sendAt": datetime.fromtimestamp(time.time() + 31 * 86400, timezone.utc).isoformat()}, False),
                           ({"sendAt": "2026-12-24T18:00:00"}, False),
                           ({"sendAt": datetime.fromtimestamp(time.time() - 60, timezone.utc).isoformat()}, True)):
        r = edge.call("POST", "/send", tok, {"recipientId": "fan-x", "content": "x", **body})
        if field_ok:
            assert (r.status_code, r.json()["status"]) == (202, "queued"), "a past sendAt means now"
        else:
            assert r.status_code == 400 and [d["field"] for d in r.json()["details"]] == ["sendAt"], r.text


def test_a_paused_account_sends_nothing_and_resumes_at_its_pace(system):
    """POST /account/pause mid-run: after the control's trip through SQS (a long poll
    hands it over at once; 500 ms allowed, with a delivery under way), nothing of the
    account reaches the gateway, also what it sends meanwhile, while another account
    flows; GET /status says paused. After resume everything is delivered once, one
    spacing apart (no catch-up burst)."""
    tag = uuid.uuid4().hex[:8]
    account, other = f"hold-{tag}", f"free-{tag}"
    edge, tok = system.edge(), token(account)
    workers = system.start_workers("hold")
    try:
        ids = system.send(account, fans(tag, 12))
        wait_until(lambda: len(system.deliveries({account})) >= 3, 20, "the account sending")
        r = edge.call("POST", "/account/pause", tok)
        paused_at = time.time() * 1000
        assert (r.status_code, r.json()) == (200, {"success": True, "paused": True}), r.text
        assert edge.call("GET", "/status", tok).json()["account"]["paused"] is True
        ids += system.send(account, ["while-held"])
        others = system.send(other, fans(f"o{tag}", 5))
        system.wait_delivered(others, timeout=20)  # the other account flows meanwhile
        time.sleep(1)  # the window under test, after the other account's 5 (~1 s)
        r = edge.call("POST", "/account/resume", tok)
        resumed_at = time.time() * 1000
        assert (r.status_code, r.json()) == (200, {"success": True, "paused": False}), r.text
        assert edge.call("GET", "/status", tok).json()["account"]["paused"] is False
        system.wait_delivered(ids, timeout=30)
    finally:
        stop_all(workers)
    got = system.deliveries({account})
    times = sorted(ms(d["receivedAt"]) for d in got)
    held = [t for t in times if paused_at + 500 < t < resumed_at]
    after = [t for t in times if t >= resumed_at]
    figure("pause_account", held_ms=round(resumed_at - paused_at), sent_while_held=len(held), sent_after=len(after))
    assert sorted(d["messageId"] for d in got) == sorted(ids), "each once, nothing lost"
    assert not held, f"{len(held)} sent while the account was paused"
    # No catch-up burst: about one spacing apart (jitter aside), never over the limit.
    assert after and all(b - a >= SPACING_MS / 2 for a, b in zip(after, after[1:])), after
    assert max_in_window(times, WINDOW_MS) <= MAX
    r = edge.call("POST", "/account/hold", tok)
    assert r.status_code == 404


def test_retries_failures_and_the_edges_retry(system):
    account = f"retry-{uuid.uuid4().hex[:8]}"
    edge = system.edge()
    system.control("POST", "/_control/failures", {"recipientPattern": "flaky", "status": 503, "count": 2})
    system.control("POST", "/_control/failures", {"recipientPattern": "bad", "status": 400, "count": 1})
    system.control("POST", "/_control/failures", {"recipientPattern": "down", "status": 500})
    workers = system.start_workers("retry")
    tok = token(account)
    try:
        ids = {r: system.send(account, [r], content=f"to {r}")[0] for r in ("flaky", "bad", "down")}

        def status(r):
            return edge.call("GET", f"/{ids[r]}", tok).json()

        wait_until(lambda: (status("flaky")["status"], status("bad")["status"], status("down")["status"]) == ("sent", "failed", "failed"),
                   30, "flaky sent, bad and down failed")
        flaky, bad, down = status("flaky"), status("bad"), status("down")
        assert (flaky["status"], flaky["attempts"]) == ("sent", 3), flaky
        assert (bad["status"], bad["attempts"]) == ("failed", 1) and "400" in bad["lastError"], bad
        assert (down["status"], down["attempts"]) == ("failed", 3) and "500" in down["lastError"] and "3 attempts" in down["lastError"], down
        failed = edge.call("GET", "/failed", tok).json()
        assert {m["id"] for m in failed["failedMessages"]} == {ids["bad"], ids["down"]}
        assert failed["total"] == 2

        system.control("DELETE", "/_control/failures")
        r = edge.call("POST", f"/{ids['down']}/retry", tok)
        assert r.status_code == 200, r.text
        system.wait_delivered([ids["down"]], timeout=20)
        wait_until(lambda: status("down")["status"] == "sent", 10, "the retried message recorded as sent")
        down = status("down")
        assert (down["status"], down["attempts"]) == ("sent", 1), down
        assert edge.call("POST", f"/{ids['down']}/retry", tok).status_code == 409
        s = edge.call("GET", "/status", tok).json()
        assert s["account"] == {"backlog": 0, "sent": 2, "failed": 1, "paused": False}, s["account"]
        assert s["processing"]["lastProcessedAt"] is not None
    finally:
        stop_all(workers)
        system.control("DELETE", "/_control/failures")


def test_kill_9_sends_again_at_most_what_it_held(system):
    """The gateway holds every answer 1.5 s, so the worker killed mid-run dies with
    deliveries in flight (they reached the gateway, unanswered): those go again after
    their lease, sent by the next worker within the limit, and nothing beyond the
    leases it held goes twice."""
    tag = uuid.uuid4().hex[:8]
    accounts = [f"crash-{tag}-{i}" for i in range(10)]
    system.control("POST", "/_control/failures", {"recipientPattern": f"k{tag}", "status": 202, "delayMs": 1500})
    [victim] = system.start_workers("crash")
    survivors = []
    try:
        ids = [i for a in accounts for i in system.send(a, fans(f"k{tag}-{a[-1]}", 20))]
        # All scheduled (a message received but not yet scheduled would come back only
        # after the queue's 60 s visibility timeout), and deliveries under way.
        wait_until(lambda: system.queue_empty() and len(system.deliveries(set(accounts))) >= 10, 20, "all scheduled, deliveries in flight")
        victim.stop(signal.SIGKILL)
        killed = time.time() * 1000
        held = system.redis_count("ZCARD", "crash:leases")
        in_flight = [d for d in system.deliveries(set(accounts)) if ms(d["receivedAt"]) > killed - 1500]
        survivors = system.start_workers("crash")
        system.wait_delivered(ids, timeout=60)
        wait_until(lambda: system.redis_count("ZCARD", "crash:leases") == 0, 20, "every lease completed")
    finally:
        stop_all([victim, *survivors])
        system.control("DELETE", "/_control/failures")
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    duplicates = len(delivered) - len(set(delivered))
    worst = max(max_in_window([ms(d["receivedAt"]) for d in got if d["accountId"] == a], WINDOW_MS) for a in accounts)
    figure("kill_9", messages=len(ids), delivered=len(set(delivered)), duplicates=duplicates, in_flight_at_kill=len(in_flight),
           leases_at_kill=held, worst_window_count=worst)
    assert set(delivered) == set(ids)
    assert in_flight, "the kill must hit deliveries in flight"
    assert len(in_flight) <= duplicates <= held, f"{duplicates} sent twice; {len(in_flight)} in flight and {held} leases held at the kill"
    assert worst <= MAX, "the messages sent again still keep the limit"


def test_redis_restart_loses_nothing_sends_nothing_while_down_and_keeps_the_limit(system):
    accounts = [f"redis-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    workers = system.start_workers("restart")
    try:
        ids = [i for a in accounts for i in system.send(a, fans(a, 20))]
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 10, 20, "deliveries under way")
        stopped, started = system.restart_redis(down_for=1.5)
        system.wait_delivered(ids, timeout=60)
    finally:
        stop_all(workers)
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    worst = max(max_in_window([ms(d["receivedAt"]) for d in got if d["accountId"] == a], WINDOW_MS) for a in accounts)
    # A send taken just before the stop may reach the gateway just after it: a message is
    # taken up to its claim's lead before its slot (CLAIM_LEAD, or twice the recent
    # claims' time through the emulator; at most 1 s), and sent at the slot.
    while_down = [d for d in got if stopped + 1000 < ms(d["receivedAt"]) < started]
    figure("redis_restart", messages=len(ids), delivered=len(set(delivered)), duplicates=len(delivered) - len(set(delivered)),
           worst_window_count=worst, sent_while_down=len(while_down))
    assert set(delivered) == set(ids) and len(delivered) == len(ids)
    assert not while_down, f"{len(while_down)} sent while Redis was down"
    assert worst <= MAX


def test_sigterm_finishes_deliveries_in_flight_exits_0_and_flushes_metrics(system):
    """The gateway holds every answer 1 s, so the signal comes with deliveries in flight:
    they finish and are recorded (none is sent again by the next worker)."""
    tag = uuid.uuid4().hex[:8]
    accounts = [f"term-{tag}-{i}" for i in range(3)]
    env_name = f"term-{tag}"
    system.control("POST", "/_control/failures", {"recipientPattern": f"t{tag}-fan-3", "status": 400})  # first: rules match in order
    system.control("POST", "/_control/failures", {"recipientPattern": f"t{tag}", "status": 202, "delayMs": 1000})
    [first] = system.start_workers("term", ENVIRONMENT=env_name, METRICS_INTERVAL="60s")
    try:
        recipients = [f"t{tag}-fan-{j}" for j in range(10)]
        ids = [i for a in accounts for i in system.send(a, recipients)]
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 3, 20, "deliveries reaching the gateway")
        signalled = time.time() * 1000
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(15) == 0, "exit code after SIGTERM"
        first.stop()
        partial = system.deliveries(set(accounts))
        in_flight = [d for d in partial if ms(d["receivedAt"]) > signalled - 1000]
        assert in_flight, "the signal must come while deliveries are under way"
        assert len(partial) < len(ids) - 3, "the test must stop the worker mid-run"
        [second] = system.start_workers("term", ENVIRONMENT=env_name, METRICS_INTERVAL="1s")
        try:
            expected = [i for i, r in zip(ids, recipients * len(accounts)) if not r.endswith("fan-3")]
            system.wait_delivered(expected, timeout=30)
            # The first worker's counts reach CloudWatch only through its shutdown flush.
            system.wait_metrics(env_name, {("MessagesProcessed", "Sum"): len(expected), ("MessagesFailed", "Sum"): len(accounts),
                                           ("SendLatency", "SampleCount"): len(ids)})
        finally:
            second.stop()
    finally:
        system.control("DELETE", "/_control/failures")
    got = [d["messageId"] for d in system.deliveries(set(accounts))]
    figure("sigterm", in_flight_at_signal=len(in_flight), delivered=len(got))
    assert sorted(got) == sorted(expected), "each once: those in flight at the signal were recorded, not released"


def test_every_metric_is_published_with_its_value(system):
    """All eight metrics, under the one `Environment` dimension, against what the test
    caused: 20 sends, 2 retries, a failure, a 429, an unreadable message in the DLQ."""
    tag = uuid.uuid4().hex[:8]
    account, env_name = f"metrics-{tag}", f"metrics-{tag}"
    system.control("POST", "/_control/failures", {"recipientPattern": f"{tag}-flaky", "status": 503, "count": 2})
    system.control("POST", "/_control/failures", {"recipientPattern": f"{tag}-bad", "status": 400})
    system.control("POST", "/_control/failures", {"recipientPattern": f"{tag}-slow", "status": 429, "count": 1, "retryAfter": 1})
    system.sqs.send_message(QueueUrl=system.aws.queue_url, MessageBody=f"not a message {tag}")
    [worker] = system.start_workers("metrics", ENVIRONMENT=env_name)
    try:
        system.send(account, fans(tag, 17) + [f"{tag}-flaky", f"{tag}-bad", f"{tag}-slow"])
        wait_until(lambda: sorted(i["status"]["S"] for i in system.emulator.items(account)) == ["failed"] + ["sent"] * 19, 30, "all recorded")
        # Calls at the gateway: 17 + 3 (flaky) + 1 (bad) + 2 (slow); a message put back
        # after a 429 is retried too (without using an attempt).
        system.wait_metrics(env_name, {
            ("MessagesProcessed", "Sum"): 19, ("MessagesFailed", "Sum"): 1, ("MessagesRetried", "Sum"): 3,
            ("RateLimitDeferrals", "Sum"): 1, ("SendLatency", "SampleCount"): 23})
        wait_until(system.queue_empty, 10, "the queue drained")
        quiet = time.time()
        dead = int(system.sqs.get_queue_attributes(QueueUrl=system.aws.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
        wait_until(lambda: len(system.metric(env_name, "QueueDepth", "Maximum", since=quiet)) >= 2, 10, "two flushes after the queue drained")
        backlog = system.metric(env_name, "ScheduledBacklog", "Maximum")
    finally:
        worker.stop()
        system.control("DELETE", "/_control/failures")
    assert dead >= 1
    assert set(system.metric(env_name, "QueueDepth", "Maximum", since=quiet)) == {0}
    assert set(system.metric(env_name, "DLQCount", "Maximum", since=quiet)) == {dead}
    assert max(backlog) >= 10 and backlog[-1] == 0, f"ScheduledBacklog {backlog}: 20 queued at 200 ms spacing, then none"
    names = {m["MetricName"] for m in system.cloudwatch.list_metrics(Namespace="Huntaze/OnlyFans", Dimensions=[{"Name": "Environment", "Value": env_name}])["Metrics"]}
    assert names == {"QueueDepth", "DLQCount", "ScheduledBacklog", "MessagesProcessed", "MessagesFailed", "MessagesRetried", "RateLimitDeferrals", "SendLatency"}


def test_unreadable_body_goes_to_the_dead_letter_queue(system):
    workers = system.start_workers("dlq")
    try:
        system.sqs.send_message(QueueUrl=system.aws.queue_url, MessageBody="{not a message")
        deadline = time.monotonic() + 20
        found = []
        while not found and time.monotonic() < deadline:
            r = system.sqs.receive_message(QueueUrl=system.aws.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1)
            found = [m for m in r.get("Messages", []) if m["Body"] == "{not a message"]
        assert found and "rejectedBecause" in found[0]["MessageAttributes"]
    finally:
        stop_all(workers)


def test_help_and_bad_settings(system):
    out = subprocess.run([str(stack.binary("worker-native")), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "RATE_LIMIT_WINDOW" in out.stdout and "REDIS_URL" in out.stdout
    bad = subprocess.run([str(stack.binary("worker-native"))], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "RATE_LIMIT_WINDOW": "soon", "GATEWAY_TOKEN": "s3cret", "GATEWAY_TIMEOUT": "30s", "LEASE_TIMEOUT": "30s"})
    assert bad.returncode == 2
    for name in ("RATE_LIMIT_WINDOW", "SQS_RATE_LIMITER_QUEUE_URL", "LEASE_TIMEOUT"):
        assert name in bad.stderr, bad.stderr
    assert "s3cret" not in bad.stderr


def test_the_worker_refuses_to_send_without_the_rate_limiter(system):
    """With every setting valid but RATE_LIMITER_ENABLED unset, or anything but `true`,
    the worker exits before taking a message."""
    account = f"unlimited-{uuid.uuid4().hex[:8]}"
    [mid] = system.send(account, ["fan-1"])
    for value in (None, "yes"):
        env = system.worker_env("unlimited", HEALTH_PORT=str(stack.free_port()))
        env.pop("RATE_LIMITER_ENABLED") if value is None else env.update(RATE_LIMITER_ENABLED=value)
        out = subprocess.run([str(stack.binary("worker-native"))], capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"], **env})
        assert out.returncode != 0 and "RATE_LIMITER_ENABLED" in out.stdout + out.stderr, (out.returncode, out.stderr)
    assert not system.deliveries({account})
    [(body, _)] = system.capture([mid])  # still in the queue, never received
    assert json.loads(body)["creatorId"] == account


@pytest.fixture
def proxy(system):
    p = FaultProxy(system.aws.endpoint)
    yield p
    p.stop()


def test_a_redis_outage_sends_nothing_to_the_dead_letter_queue(system):
    """Review defect 2: ingest kept receiving while it could not schedule, and every
    receive counts towards the DLQ. A queue of its own with a 1 s visibility timeout and
    2 receives before the DLQ (an edge of its own writes to it), so that an ingest that
    keeps receiving dead-letters its messages within seconds of the outage."""
    tag = uuid.uuid4().hex[:8]
    sqs = system.sqs  # the emulator's root key: the edge's and worker's users may use only the main queues
    dlq = sqs.create_queue(QueueName=f"outage-dlq-{tag}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=f"outage-{tag}", Attributes={
        "VisibilityTimeout": "1", "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})})["QueueUrl"]
    root = {"SQS_RATE_LIMITER_QUEUE_URL": queue, "SQS_RATE_LIMITER_DLQ_URL": dlq, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    part, edge = start_edge("edge-outage", edge_settings(system.aws, **root))
    account = f"outage-{tag}"
    workers = []
    try:
        system.redis.stop()
        try:
            workers = system.start_workers("outage", SQS_WAIT_SECONDS="1", **root)
            ids = system.send(account, fans(tag, 5), edge=edge)
            time.sleep(6)  # the window under test: six visibility timeouts, in which nothing may happen
            dead = int(sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
            assert dead == 0, f"{dead} valid messages dead-lettered during a Redis outage"
            assert not system.deliveries({account}), "nothing is sent without Redis"
        finally:
            system.redis = stack.start_redis(system.redis_port, LOGS / "redis.log", system.redis_dir)
        system.wait_delivered(ids, timeout=30)
        wait_statuses(system, account, 5)
    finally:
        stop_all(workers)
        part.stop()
    assert summary(system, account) == {"queued": 0, "sent": 5, "failed": 0}


def test_a_ledger_outage_loses_no_outcome_and_sends_nothing_twice(system, proxy):
    """Review defect 4: after five failed ledger writes the outcomes were dropped (items
    stayed `queued` for ever). Outcome writes fail for 8 s, longer than the 3 s lease:
    the leases must be renewed meanwhile, or other takes would send the messages again."""
    account = f"ledger-{uuid.uuid4().hex[:8]}"
    workers = system.start_workers("ledgerdown", AWS_ENDPOINT_URL=proxy.url)
    try:
        proxy.fail("sentAt", seconds=8)  # only an outcome's write names sentAt
        ids = system.send(account, fans(account, 3))
        system.wait_delivered(ids, timeout=20)
        wait_statuses(system, account, 3, timeout=40)
    finally:
        stop_all(workers)
    assert proxy.hits, "the outcome writes were failed"
    delivered = [d["messageId"] for d in system.deliveries({account})]
    assert sorted(delivered) == sorted(ids), "each delivered once, none again after its lease"
    assert summary(system, account) == {"queued": 0, "sent": 3, "failed": 0}


def test_counters_follow_the_items_under_duplicates_and_lost_answers(system, proxy):
    """Review defect 6: counters moved with every try, not with the transitions. The
    answers of the first two counter-bearing writes are lost (committed, then a 500:
    the SDK tries again), and SQS delivers two of the edge's messages twice."""
    account = f"count-{uuid.uuid4().hex[:8]}"
    ids = [i for f in fans(account, 4) for i in system.send(account, [f])]  # four queue messages
    captured = system.capture(ids)
    workers = system.start_workers("counters", AWS_ENDPOINT_URL=proxy.url)
    try:
        proxy.fail(":q", mode="lose", count=2)  # every write that moves a counter names :q
        system.requeue(captured)
        system.requeue(captured[:2])
        system.wait_delivered(ids, timeout=20)
        wait_statuses(system, account, 4)
        wait_until(system.queue_empty, 20, "the duplicates received and dropped")
    finally:
        stop_all(workers)
    assert len(proxy.hits) == 2
    delivered = [d["messageId"] for d in system.deliveries({account})]
    assert sorted(delivered) == sorted(ids)
    assert summary(system, account) == {"queued": 0, "sent": 4, "failed": 0}


def test_a_message_twice_in_one_receive_is_sent_and_counted_once(system):
    """SQS may hand over one message twice in one receive: the edge's message is put
    back twice in one SendMessageBatch, so both copies arrive together. The batch read of
    the ledger and the counting transaction refuse a list that names one item twice, so
    the repeat must be dropped before them, or the batch fails for ever."""
    account = f"twice-{uuid.uuid4().hex[:8]}"
    [mid] = system.send(account, ["fan-1"])
    [captured] = system.capture([mid])
    system.requeue([captured, captured])
    workers = system.start_workers("twice")
    try:
        system.wait_delivered([mid], timeout=20)
        wait_statuses(system, account, 1)
        wait_until(system.queue_empty, 20, "both copies received and deleted")
    finally:
        stop_all(workers)
    assert [d["messageId"] for d in system.deliveries({account})] == [mid]
    assert summary(system, account) == {"queued": 0, "sent": 1, "failed": 0}


def test_a_campaign_is_queued_only_once_its_item_is_written(system, proxy):
    """Review defect 1 (the edge's unconditional batch writes of a mass message's items
    raced the worker's outcomes) cannot recur: the edge writes one campaign item, and
    queues the message naming it only after that write. The write is held 2 s here:
    nothing is queued meanwhile, and the campaign goes out in full after."""
    part, edge = start_edge("edge-slow-ledger", edge_settings(system.aws, AWS_ENDPOINT_URL=proxy.url))
    workers = system.start_workers("massorder")
    try:
        account = f"mass-{uuid.uuid4().hex[:8]}"
        proxy.fail("#campaign#", mode="delay", delay=2)
        started = time.monotonic()
        ids = system.send(account, ["fan-1", "fan-2"], edge=edge)
        assert time.monotonic() - started >= 2, "the answer waited for the item"
        system.wait_delivered(ids, timeout=20)
        wait_statuses(system, account, 2)
    finally:
        stop_all(workers)
        part.stop()
    assert proxy.hits, "the campaign's write was slowed"
    assert sorted(i["status"]["S"] for i in system.emulator.items(account)) == ["sent", "sent"]


def campaign_keys(system, prefix):
    """The schedule's keys that belong to messages and campaigns (not to accounts)."""
    out = subprocess.run(["redis-cli", "-p", str(system.redis_port), "--scan", "--pattern", f"{prefix}:*"], capture_output=True, text=True, check=True).stdout.split()
    return sorted(k for k in out if k.split(":", 1)[1].split(":")[0] in ("c", "cr", "seen", "body", "q"))


def test_a_campaign_is_fanned_out_followed_and_leaves_nothing(system):
    """A campaign of 30 across two workers: its progress moves as it is sent (counts add
    up to the total at every read), it ends `completed` with every item sent, counted
    into the account's summary and the campaign, and no key of it is left in Redis."""
    tag = uuid.uuid4().hex[:8]
    account = f"camp-{tag}"
    edge, tok = system.edge(), token(account)
    workers = system.start_workers("camp", n=2)
    try:
        r = edge.call("POST", "/send", tok, {"recipientIds": fans(tag, 30), "content": "campaign", "priority": 4})
        assert r.status_code == 202, r.text
        cid, ids = r.json()["campaignId"], [m["messageId"] for m in r.json()["messages"]]
        seen = []
        while True:
            c = edge.call("GET", f"/campaigns/{cid}", tok).json()
            assert c["queued"] + c["sent"] + c["failed"] + c["canceled"] == c["total"] == 30, c
            seen.append((c["status"], c["sent"]))
            if c["status"] == "completed":
                break
            assert len(seen) < 400, f"not completed: {c}"
            time.sleep(0.1)
        system.wait_delivered(ids, timeout=5)
    finally:
        stop_all(workers)
    assert any(status == "sending" and 0 < sent < 30 for status, sent in seen), f"progress was visible: {seen[::10]}"
    assert c["sent"] == 30 and c["estimatedCompletionTime"] is None
    items = system.emulator.items(account)
    assert len(items) == 30 and all(i["status"]["S"] == "sent" and i["campaignId"]["S"] == cid for i in items)
    s = summary(system, account)
    assert (s.get("queued", 0), s["sent"]) == (0, 30), s
    assert campaign_keys(system, "camp") == [], "a finished campaign leaves no key"
    times = sorted(ms(d["receivedAt"]) for d in system.deliveries({account}))
    assert max_in_window(times, WINDOW_MS) <= MAX


def test_cancel_a_campaign_mid_run_and_one_message(system):
    """DELETE /campaigns/{id} after a few sends: nothing more of it goes out (what a
    worker had claimed at that moment may finish), each message is `sent` or `canceled`,
    never both, the counts add up, no key is left. DELETE /{id} cancels one queued
    message (200, then never sent), refuses a sent one (409 not_cancelable) and an
    unknown one (404); a completed campaign is not cancelable."""
    tag = uuid.uuid4().hex[:8]
    account = f"cancel-{tag}"
    edge, tok = system.edge(), token(account)
    # One message canceled before any worker has seen its campaign.
    early = edge.call("POST", "/send", tok, {"recipientIds": fans(f"e{tag}", 3), "content": "early"}).json()
    early_ids = [m["messageId"] for m in early["messages"]]
    r = edge.call("DELETE", f"/{early_ids[1]}", tok)
    assert (r.status_code, r.json()["status"]) == (200, "canceled"), r.text
    assert edge.call("GET", f"/{early_ids[1]}", tok).json()["status"] == "canceled"
    workers = system.start_workers("cancel", n=2)
    try:
        system.wait_delivered([early_ids[0], early_ids[2]], timeout=20)
        r = edge.call("POST", "/send", tok, {"recipientIds": fans(tag, 40), "content": "typo"})
        cid, ids = r.json()["campaignId"], [m["messageId"] for m in r.json()["messages"]]
        wait_until(lambda: len([d for d in system.deliveries({account}) if d["messageId"] in ids]) >= 5, 20, "5 of the campaign sent")
        r = edge.call("DELETE", f"/campaigns/{cid}", tok)
        assert (r.status_code, r.json()["status"]) == (200, "canceled"), r.text
        at_cancel = len([d for d in system.deliveries({account}) if d["messageId"] in ids])
        wait_until(lambda: sum(i["status"]["S"] == "canceled" for i in system.emulator.items(account) if i.get("campaignId", {}).get("S") == cid) >= 40 - at_cancel - 2,
                   20, "the waiting messages marked canceled")
        time.sleep(2 * SPACING_MS / 1000)
        [single] = system.send(account, ["after-fan"])  # the account goes on with other work
        system.wait_delivered([single], timeout=10)
        assert edge.call("DELETE", f"/campaigns/{cid}", tok).status_code == 200, "canceling again answers the same"
        r = edge.call("DELETE", f"/{single}", tok)
        assert (r.status_code, r.json()["code"]) == (409, "not_cancelable"), r.text
        assert edge.call("DELETE", f"/{uuid.uuid4()}", tok).status_code == 404
        r = edge.call("DELETE", f"/campaigns/{early['campaignId']}", tok)
        assert (r.status_code, r.json()["code"]) == (409, "not_cancelable"), "a completed campaign"
    finally:
        stop_all(workers)
    sent = {d["messageId"] for d in system.deliveries({account}) if d["messageId"] in ids}
    assert at_cancel <= len(sent) <= at_cancel + 2, f"{len(sent)} sent, {at_cancel} at the cancel"
    statuses = {i["messageId"]["S"]: i["status"]["S"] for i in system.emulator.items(account) if i.get("campaignId", {}).get("S") == cid}
    assert {m for m, st in statuses.items() if st == "sent"} == sent, "sent in the ledger is what the gateway got"
    assert all(statuses.get(m) == "canceled" for m in ids if m not in sent), "every other message canceled"
    c = edge.call("GET", f"/campaigns/{cid}", tok).json()
    assert (c["status"], c["sent"], c["canceled"], c["queued"]) == ("canceled", len(sent), 40 - len(sent), 0), c
    e = edge.call("GET", f"/campaigns/{early['campaignId']}", tok).json()
    assert (e["status"], e["sent"], e["canceled"]) == ("completed", 2, 1), e
    assert early_ids[1] not in {d["messageId"] for d in system.deliveries({account})}
    assert campaign_keys(system, "cancel") == [], "a canceled campaign leaves no key"
    assert summary(system, account).get("queued", 0) == 0


def test_cancels_racing_three_workers_never_both(system):
    """Every message of 20 accounts (30 each) is canceled at a random moment while
    three workers send at full rate: each cancel answered 200 is never delivered, each
    answered 409 was claimed for sending (and is delivered); no message is both sent
    and canceled in the ledger, and the limit holds."""
    import random
    from concurrent.futures import ThreadPoolExecutor
    accounts = [f"race-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    edge = system.edge()
    # 32 threads cancelling through the edge load this 2-core machine enough to delay a
    # delivery past half the usual margin (one CI run saw 11 in a window): a wider one.
    workers = system.start_workers("race", n=3, RATE_LIMIT_MARGIN="200ms")
    try:
        ids = {a: system.send(a, fans(a, 30)) for a in accounts}
        targets = [(a, m) for a in accounts for m in ids[a]]
        random.Random(7).shuffle(targets)
        time.sleep(0.5)

        def cancel(target):
            time.sleep(random.random() * 2.0)
            return target, edge.call("DELETE", f"/{target[1]}", token(target[0])).status_code

        with ThreadPoolExecutor(32) as pool:
            answers = dict(pool.map(cancel, targets))
        not_canceled = [m for (a, m), code in answers.items() if code == 409]
        system.wait_delivered(not_canceled, timeout=30)
        time.sleep(1)
    finally:
        stop_all(workers)
    codes = sorted(set(answers.values()))
    assert set(codes) <= {200, 409}, codes
    delivered = [d["messageId"] for d in system.deliveries(set(accounts))]
    assert len(delivered) == len(set(delivered)), "none delivered twice"
    canceled = {m for (a, m), code in answers.items() if code == 200}
    assert not canceled & set(delivered), f"{len(canceled & set(delivered))} canceled messages were delivered"
    assert set(not_canceled) == set(delivered), "a refused cancel means it was sent"
    both = 0
    for a in accounts:
        for i in system.emulator.items(a):
            st = i["status"]["S"]
            both += (i["messageId"]["S"] in canceled) != (st == "canceled")
    assert both == 0, f"{both} ledger items disagree with the cancel's answer"
    figure("cancel_race", messages=len(targets), canceled=len(canceled), sent=len(delivered))
    assert 0 < len(canceled) < len(targets), "the cancels really raced the sends"
    for a in accounts:
        times = sorted(ms(d["receivedAt"]) for d in system.deliveries({a}))
        assert max_in_window(times, WINDOW_MS) <= MAX


def test_redis_losing_its_data_mid_run_loses_no_message(system):
    """FLUSHALL mid-run (what an ElastiCache failover without persistence, a replaced
    node or an eviction does): the next take finds the schedule's epoch missing, one
    worker rebuilds it from the ledger's waiting index, and every message is delivered
    (again only what was in flight at the loss), the ledger all `sent`, the summaries
    back to 0 waiting, no rolling window over the limit."""
    accounts = [f"lost-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    workers = system.start_workers("lost", n=2)
    try:
        ids = [i for a in accounts[:2] for i in system.send(a, fans(a, 20))]
        ids += system.send(accounts[2], fans(accounts[2], 20))  # a campaign, fanned out
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 15, 20, "deliveries under way")
        subprocess.run(["redis-cli", "-p", str(system.redis_port), "FLUSHALL"], check=True, capture_output=True)
        lost_at = time.time() * 1000
        system.wait_delivered(ids, timeout=60)
        for a in accounts:
            wait_statuses(system, a, 20)
    finally:
        stop_all(workers)
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    duplicates = len(delivered) - len(set(delivered))
    worst = max(max_in_window([ms(d["receivedAt"]) for d in got if d["accountId"] == a], WINDOW_MS) for a in accounts)
    rebuilt = rebuilds("lost", 2)
    after_loss = [r for r in rebuilt if r["added"] > 0]
    figure("redis_data_lost", messages=len(ids), duplicates=duplicates, worst_window_count=worst, rebuilt=after_loss,
           last_delivery_after_loss_ms=round(max(ms(d["receivedAt"]) for d in got) - lost_at))
    assert set(delivered) == set(ids), f"{len(set(ids) - set(delivered))} messages lost"
    assert duplicates <= 2, f"{duplicates} sent twice: at most what was in flight at the loss"
    assert worst <= MAX
    assert len(after_loss) == 1, f"one worker rebuilt the schedule, putting back what waited: {rebuilt}"
    for a in accounts:
        assert summary(system, a).get("queued", 0) == 0
