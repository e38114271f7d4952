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
from urllib.parse import quote

import pytest

from harness import (
    CLAIM_LEAD_MS, JITTER_MS, LOGS, account_counts, given_back, MAX, MAX_LEAD_MS, SPACING_MS, WINDOW_MS, System, campaign_counts, edge_settings, fans, figure, max_in_window, ms, rebuilds, span_bound,
    start_edge, stop_all, summary, token, wait_statuses,
)
from harness import wait_for as wait_until
from devstack import stack
from devstack.faultproxy import FaultProxy

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


# A window of 4 s here (spacing 400 ms): a send taken more than a twentieth of the
# spacing late counts from when it went, so at 200 ms spacing the dispatch delays of a
# loaded 2-vCPU machine (10 ms and more) already cost more than the 1% this allows.
# The margin at the same share of the window as the other tests' (5%): half of it is
# the worker's (a send goes at most that late), half the way to the gateway's, whose
# time on this machine reaches 50 ms and more now and then (a CI run saw 11 in a
# window at a margin of 100 ms).
EXACT_WINDOW_MS = 4000
EXACT_MARGIN_MS = 200


def test_exact_limit_across_three_workers(system):
    accounts = [f"acct-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    workers = system.start_workers("limit", n=3, RATE_LIMIT_WINDOW=f"{EXACT_WINDOW_MS}ms", RATE_LIMIT_MARGIN=f"{EXACT_MARGIN_MS}ms")
    try:
        ids = [i for a in accounts for i in system.send(a, fans(a, 30))]
        system.wait_delivered(ids, timeout=90)
    finally:
        stop_all(workers)
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    assert len(delivered) == len(set(delivered)) == 600, "each message delivered exactly once"
    ideal_ms = 29 * EXACT_WINDOW_MS / MAX
    bound = span_bound(30, EXACT_WINDOW_MS, EXACT_MARGIN_MS)
    # A send a worker gave back because it was itself late (a stalled process, a claim
    # slower than its lead: logged) leaves its slot idle, as the limit requires: its
    # account's span may be a slot and a margin longer for each (CI: 1.1057 after a
    # stall on a loaded machine). Late claims name no account: each excuses them all.
    stalled, late = given_back(w.log for w in workers)
    worst, spans = 0, []
    for a in accounts:
        times = sorted(ms(d["receivedAt"]) for d in got if d["accountId"] == a)
        worst = max(worst, max_in_window(times, EXACT_WINDOW_MS))
        excused = late + sum(1 for d in got if d["accountId"] == a and d["messageId"] in stalled)
        spans.append((times[-1] - times[0] - excused * (EXACT_WINDOW_MS / MAX + EXACT_MARGIN_MS)) / ideal_ms)
    figure("exact_limit_3_workers", accounts=20, per_account=30, worst_window_count=worst,
           span_vs_ideal_max=round(max(spans), 4), span_vs_ideal_median=round(sorted(spans)[10], 4), span_bound=round(bound, 4))
    assert worst <= MAX, f"{worst} deliveries in one rolling {EXACT_WINDOW_MS} ms window"
    # 1.0603: the old margin on every spacing (1.5), or one idle slot (1.035 + 0.034), fails it.
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
    ahead of the 429, made once the account is sending) and that account sends nothing until then, uses no attempt and then resumes;
    another account keeps its pace meanwhile."""
    tag = uuid.uuid4().hex[:8]
    paused, other = f"paused-{tag}", f"other-{tag}"
    workers = system.start_workers("pause")
    try:
        ids = system.send(paused, fans(f"p{tag}", 8)) + system.send(other, fans(f"o{tag}", 30))
        wait_until(lambda: system.deliveries({paused}), 20, "the account sending")
        # fan-5 is five spacings away: the rule is there before it is sent, and the date
        # (whole seconds) still 2-3 s ahead when the 429 is met.
        until = int(time.time()) + 4
        retry_after = email.utils.formatdate(until, usegmt=True) if http_date else 2
        system.control("POST", "/_control/failures", {"recipientPattern": f"p{tag}-fan-5", "status": 429, "count": 1, "retryAfter": retry_after})
        system.wait_delivered(ids, timeout=30)
    finally:
        stop_all(workers)
        system.control("DELETE", "/_control/failures")
    [refusal] = system.refused(f"p{tag}-fan-5")
    at = ms(refusal["receivedAt"])
    resume_at = until * 1000 if http_date else at + 2000
    after = sorted(ms(d["receivedAt"]) for d in system.deliveries({paused}) if ms(d["receivedAt"]) > at)
    others = [ms(d["receivedAt"]) for d in system.deliveries({other})]
    during = [x for x in others if at < x < resume_at]
    figure("pause_429", http_date=http_date, paused_for_ms=round(after[0] - at), other_sends_meanwhile=len(during))
    assert len(after) == 3, "the refused message and the two after it"
    assert after[0] - at >= 1500, f"paused only {after[0] - at:.0f} ms: the 429's Retry-After was not applied"
    assert after[0] >= resume_at - 2, f"sent {resume_at - after[0]:.0f} ms before Retry-After ended"
    assert after[0] <= resume_at + 2 * SPACING_MS, f"resumed {after[0] - resume_at:.0f} ms after Retry-After ended"
    # The other account keeps one send per spacing (less one for the edges of the pause).
    assert len(during) >= (resume_at - at) / SPACING_MS - 2, f"{len(during)} sends of the other account during the pause"
    item = system.emulator.item(paused, ids[5])
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
        assert account_counts(s) == {"backlog": 0, "sent": 2, "failed": 1, "paused": False}, s["account"]
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
        # A message taken before the stop may still reach the gateway at its slot after it
        # (taken up to its claim's lead ahead): what is leased at the stop, and only that,
        # may arrive while Redis is down. The workers' writes wait (CLIENT PAUSE) from the
        # read of the leases to the stop.
        cli = ["redis-cli", "-p", str(system.redis_port)]
        paused_at = time.time() * 1000  # no take after this
        subprocess.run([*cli, "CLIENT", "PAUSE", "5000", "WRITE"], check=True, capture_output=True)
        leased = subprocess.run([*cli, "ZRANGE", "restart:leases", "0", "-1"], capture_output=True, text=True, check=True).stdout.split()
        stopped, started = system.restart_redis(down_for=1.5)
        system.wait_delivered(ids, timeout=60)
    finally:
        stop_all(workers)
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    worst = max(max_in_window([ms(d["receivedAt"]) for d in got if d["accountId"] == a], WINDOW_MS) for a in accounts)
    while_down = [d for d in got if stopped < ms(d["receivedAt"]) < started]
    unleased = [d for d in while_down if d["messageId"] not in leased]
    # And each at its slot: at most the longest lead after the last take (a delivery's
    # own jitter aside), never later.
    late = [d for d in while_down if ms(d["receivedAt"]) > paused_at + MAX_LEAD_MS + JITTER_MS]
    figure("redis_restart", messages=len(ids), delivered=len(set(delivered)), duplicates=len(delivered) - len(set(delivered)),
           worst_window_count=worst, sent_while_down=len(while_down), leased_at_stop=len(leased))
    assert set(delivered) == set(ids) and len(delivered) == len(ids)
    assert not unleased, f"{len(unleased)} sent while Redis was down that no worker had taken before"
    assert not late, f"{len(late)} sent while Redis was down, later than the longest lead after the last take"
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
    caused: 22 sends, 2 retries, a failure, a 429, an unreadable message in the DLQ, two
    answers held 400 ms; `SendLatency`'s p99 (the alarm's statistic) sees those two."""
    tag = uuid.uuid4().hex[:8]
    account, env_name = f"metrics-{tag}", f"metrics-{tag}"
    delay_ms, started = 400, time.time()
    system.control("POST", "/_control/failures", {"recipientPattern": f"{tag}-flaky", "status": 503, "count": 2})
    system.control("POST", "/_control/failures", {"recipientPattern": f"{tag}-bad", "status": 400})
    system.control("POST", "/_control/failures", {"recipientPattern": f"{tag}-slow", "status": 429, "count": 1, "retryAfter": 1})
    system.control("POST", "/_control/failures", {"recipientPattern": f"{tag}-lag", "status": 202, "delayMs": delay_ms})
    system.sqs.send_message(QueueUrl=system.aws.queue_url, MessageBody=f"not a message {tag}")
    [worker] = system.start_workers("metrics", ENVIRONMENT=env_name)
    try:
        system.send(account, fans(tag, 17) + [f"{tag}-flaky", f"{tag}-bad", f"{tag}-slow", f"{tag}-lag-0", f"{tag}-lag-1"])
        wait_until(lambda: sorted(i["status"]["S"] for i in system.emulator.items(account)) == ["failed"] + ["sent"] * 21, 30, "all recorded")
        # Calls at the gateway: 17 + 3 (flaky) + 1 (bad) + 2 (slow) + 2 (lag); a message
        # put back after a 429 is retried too (without using an attempt).
        system.wait_metrics(env_name, {
            ("MessagesProcessed", "Sum"): 21, ("MessagesFailed", "Sum"): 1, ("MessagesRetried", "Sum"): 3,
            ("RateLimitDeferrals", "Sum"): 1, ("SendLatency", "SampleCount"): 25})
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
    assert max(backlog) >= 10 and backlog[-1] == 0, f"ScheduledBacklog {backlog}: 22 queued at 200 ms spacing, then none"
    # The two held answers are the slowest 2 of 25 calls: the p99 is one of them, the
    # median a prompt answer. None when published as a statistic set (CloudWatch has no
    # percentile of one).
    latency = system.percentiles(env_name, "SendLatency", ["p50", "p99"], since=started)
    assert latency["p99"] is not None and latency["p99"] >= delay_ms, f"SendLatency {latency}"
    assert latency["p50"] < delay_ms / 2, f"SendLatency {latency}"
    names = {m["MetricName"] for m in system.cloudwatch.list_metrics(Namespace="Huntaze/OnlyFans", Dimensions=[{"Name": "Environment", "Value": env_name}])["Metrics"]}
    assert names == {"QueueDepth", "DLQCount", "ScheduledBacklog", "MessagesProcessed", "MessagesFailed", "MessagesRetried", "RateLimitDeferrals", "SendLatency",
                     "WebhookDeliveries", "WebhookFailures", "WebhookOldestEventAge"}


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
    """Ingest must stop receiving while it cannot schedule: every receive counts towards
    the DLQ. A queue of its own with a 1 s visibility timeout and
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
    """Outcomes are never dropped however long the ledger refuses them (items would stay
    `queued` for ever). Outcome writes fail for 8 s, longer than the 3 s lease:
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
    """Counters move with the transitions they count, never with each try of a write. The
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


def test_a_late_duplicate_of_a_finished_message_is_dropped(system):
    """SQS may hand a message over again long after it was sent: once the message is
    finished and the schedule has forgotten it (its keys gone), its queue copy handed
    over again is dropped before the schedule (the ledger shows it finished): one
    delivery, the counters unchanged."""
    account = f"late-{uuid.uuid4().hex[:8]}"
    [mid] = system.send(account, ["fan-1"])
    [captured] = system.capture([mid])
    system.requeue([captured])
    workers = system.start_workers("late")
    try:
        system.wait_delivered([mid], timeout=20)
        wait_statuses(system, account, 1)
        wait_until(lambda: system.redis_count("EXISTS", f"late:seen:{mid}", f"late:body:{account}") == 0, 10, "the schedule forgot it")
        before = summary(system, account)
        system.requeue([captured])
        wait_until(system.queue_empty, 20, "the late copy received and deleted")
        time.sleep(1)  # what a wrongly scheduled copy would take to reach the gateway
    finally:
        stop_all(workers)
    assert [d["messageId"] for d in system.deliveries({account})] == [mid], "delivered once"
    assert summary(system, account) == before == {"queued": 0, "sent": 1, "failed": 0}
    assert system.emulator.item(account, mid)["status"]["S"] == "sent"


def test_the_gateway_receives_each_message_whole(system):
    """What reaches the gateway, for a single message and for a campaign's (with media
    and metadata): the path names the account and the recipient (percent-encoded), the
    bearer token is the configured one, and the body carries the message's id, account,
    recipient, content, media and metadata as they were sent."""
    tag = uuid.uuid4().hex[:8]
    account = f"whole-{tag}"
    edge, tok = system.edge(), token(account)
    media = ["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.mp4"]
    single = {"recipientId": f"fan/{tag} é", "content": "Hello ✓ one", "mediaUrls": media[:1], "metadata": {"crm": "x1", "n": 3}}
    mass = {"recipientIds": [f"{tag}-fan-{i}" for i in range(3)], "content": "Hello ✓ all", "mediaUrls": media, "metadata": {"crm": "camp"}}
    workers = system.start_workers("whole")
    try:
        r1, r2 = edge.call("POST", "/send", tok, single), edge.call("POST", "/send", tok, mass)
        assert r1.status_code == r2.status_code == 202, (r1.text, r2.text)
        sent = {r1.json()["messageId"]: single} | {m["messageId"]: mass for m in r2.json()["messages"]}
        recipient = {r1.json()["messageId"]: single["recipientId"]} | {m["messageId"]: m["recipientId"] for m in r2.json()["messages"]}
        system.wait_delivered(list(sent), timeout=20)
    finally:
        stop_all(workers)
    got = system.deliveries({account})
    assert sorted(d["messageId"] for d in got) == sorted(sent)
    for d in got:
        want = sent[d["messageId"]]
        assert d["path"] == f"/accounts/{quote(account, safe='')}/messages/{quote(recipient[d['messageId']], safe='')}", d["path"]
        assert d["authorization"] == f"Bearer {stack.GATEWAY_TOKEN}", d["authorization"]
        b = d["body"]
        assert (b["messageId"], b["accountId"], b["recipientId"]) == (d["messageId"], account, recipient[d["messageId"]]), b
        assert (b["content"], b["mediaUrls"], b["metadata"]) == (want["content"], want["mediaUrls"], want["metadata"]), b


def test_a_campaign_is_queued_only_once_its_item_is_written(system, proxy):
    """A mass message's items are never written by the edge (unconditional writes would
    race the worker's outcomes): the edge writes one campaign item, and
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
    """The schedule's keys that belong to messages and campaigns (not to accounts), but
    for a canceled campaign's marker while it has its TTL (a late copy of the campaign
    is then dropped)."""
    def cli(*args):
        return subprocess.run(["redis-cli", "-p", str(system.redis_port), *args], capture_output=True, text=True, check=True).stdout.strip()
    out = cli("--scan", "--pattern", f"{prefix}:*").split()
    kept = [k for k in out if k.split(":", 1)[1].split(":")[0] in ("c", "cr", "seen", "body", "q")]
    return sorted(k for k in kept if not (":seen:" in k and cli("GET", k) == "canceled" and int(cli("PTTL", k)) > 0))


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
    assert {k: c[k] for k in ("sent", "failed", "canceled", "queued")} == campaign_counts(system, account, cid, 30, canceled=False)
    items = system.emulator.items(account)
    assert len(items) == 30 and all(i["status"]["S"] == "sent" and i["campaignId"]["S"] == cid for i in items)
    s = summary(system, account)
    assert (s.get("queued", 0), s["sent"]) == (0, 30), s
    assert campaign_keys(system, "camp") == [], "a finished campaign leaves no key"
    times = sorted(ms(d["receivedAt"]) for d in system.deliveries({account}))
    assert max_in_window(times, WINDOW_MS) <= MAX


def test_a_campaign_of_2500_is_delivered_whole_and_in_order(system):
    """A campaign past one chunk of its list (the schedule pushes 1,000 recipients at a
    time), through the edge, at a fast limit of the account's own (an override of 200 a
    second): every message delivered once, in the campaign's order, across the chunks'
    boundaries, each to its recipient."""
    tag = uuid.uuid4().hex[:8]
    account = f"big-{tag}"
    recipients = [f"{tag}-fan-{i:05d}" for i in range(2_500)]
    system.redis_count("HSET", "big:limits", account, "200 1000 1")
    workers = system.start_workers("big")
    try:
        r = system.edge().call("POST", "/send", token(account), {"recipientIds": recipients, "content": "to everyone"})
        assert r.status_code == 202, r.text
        ids = [m["messageId"] for m in r.json()["messages"]]
        system.wait_delivered(ids, timeout=90)
    finally:
        stop_all(workers)
    got = system.deliveries({account})
    assert sorted(d["messageId"] for d in got) == sorted(ids), "each once"
    assert all(d["recipientId"] == recipients[ids.index(d["messageId"])] for d in got)
    # In the campaign's order: taken in order, sent 5 ms apart. A message given back
    # unsent (the process stalled past its slot, a claim slower than the lead) goes
    # again after those taken ahead of it meanwhile: the longest lead's worth of places
    # (1 s: 200) plus the time its release takes with the outcomes batched beside it
    # (the ledger, then Redis: up to ~2 s when the worker, the emulator and the gateway
    # starve each other on two cores, as each claim is a call of its own), never a
    # chunk's (1,000: a chunk out of order).
    place = {mid: i for i, mid in enumerate(ids)}
    displacement = max(abs(place[d["messageId"]] - k) for k, d in enumerate(got))
    figure("campaign_2500", delivered=len(got), largest_displacement=displacement)
    assert displacement <= 500, f"a message arrived {displacement} places from its place in the campaign"


def test_a_campaign_waits_in_the_index_by_its_head_and_leaves_it_when_done(system):
    """A fanned-out campaign is in the ledger's waiting index by its head alone (its
    messages' items are not), and the head has no expiry while anything of it waits
    (a held account's campaign is not lost to a rebuild by expiring); once every
    message is sent, a worker takes the head out of the index within
    `CAMPAIGN_REST_INTERVAL`, and it expires `LEDGER_TTL_DAYS` later."""
    tag = uuid.uuid4().hex[:8]
    account = f"rest-{tag}"
    edge, tok = system.edge(), token(account)
    workers = system.start_workers("rest", CAMPAIGN_REST_INTERVAL="1s")
    try:
        assert edge.call("POST", "/account/pause", tok).status_code == 200
        r = edge.call("POST", "/send", tok, {"recipientIds": fans(tag, 5), "content": "held"})
        cid, ids = r.json()["campaignId"], [m["messageId"] for m in r.json()["messages"]]
        wait_until(lambda: len(system.emulator.items(account)) == 5, 20, "the campaign fanned out")
        time.sleep(2.5)  # two rests meanwhile: the head stays, nothing of it may leave
        head = system.emulator.campaign(account, cid)
        assert "waitShard" in head and "ttl" not in head, head
        assert [i for i in system.emulator.items(account) if "waitShard" in i] == [], "its messages wait there through the head"
        assert edge.call("POST", "/account/resume", tok).status_code == 200
        system.wait_delivered(ids, timeout=30)
        wait_until(lambda: "waitShard" not in system.emulator.campaign(account, cid), 10, "the finished campaign out of the waiting index")
    finally:
        stop_all(workers)
    expires_in_days = (int(system.emulator.campaign(account, cid)["ttl"]["N"]) - time.time()) / 86400
    days = int(system.worker_env("rest").get("LEDGER_TTL_DAYS", "30"))
    assert days - 0.01 < expires_in_days <= days, expires_in_days


def test_cancel_a_campaign_mid_run_and_one_message(system):
    """DELETE /campaigns/{id} after a few sends: nothing more of it goes out (what a
    worker had claimed, or begun to claim, at that moment may finish), each message is `sent` or `canceled`,
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
    assert {k: c[k] for k in ("sent", "failed", "canceled", "queued")} == campaign_counts(system, account, cid, 40, canceled=True), "each count is of items"
    e = edge.call("GET", f"/campaigns/{early['campaignId']}", tok).json()
    assert (e["status"], e["sent"], e["canceled"]) == ("completed", 2, 1), e
    assert {k: e[k] for k in ("sent", "failed", "canceled", "queued")} == campaign_counts(system, account, early["campaignId"], 3, canceled=False)
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
    worker rebuilds it from the ledger's waiting index (a campaign's messages read from
    its head there), and every message is delivered (again only what was in flight at
    the loss), the ledger all `sent`, the summaries back to 0 waiting, no rolling window
    over the limit; a later rebuild takes the finished campaign out of the index."""
    accounts = [f"lost-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    workers = system.start_workers("lost", n=2)
    try:
        # Single messages (one request each) for two accounts, a campaign for the third.
        ids = [system.send(a, [f])[0] for a in accounts[:2] for f in fans(a, 20)]
        ids += system.send(accounts[2], fans(accounts[2], 20))
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 15, 20, "deliveries under way")
        # What the workers hold at the loss (read in the same step as the flush): the
        # most that may be sent again.
        held = system.redis_count("EVAL", "local n = redis.call('ZCARD', KEYS[1]) redis.call('FLUSHALL') return n", "1", "lost:leases")
        lost_at = time.time() * 1000
        system.wait_delivered(ids, timeout=60)
        for a in accounts:
            wait_statuses(system, a, 20)
        # The campaign stood in the waiting index by its head alone (its messages' items
        # are not in it); a rebuild that finds nothing of it waiting takes it out.
        campaign_id = ids[-1][:30] + "ffffff"
        assert "waitShard" in system.emulator.campaign(accounts[2], campaign_id), "nothing took the campaign out of the index yet"
        system.redis_count("EVAL", "redis.call('FLUSHALL') return 0", "0")
        wait_until(lambda: "waitShard" not in system.emulator.campaign(accounts[2], campaign_id), 20, "the finished campaign out of the waiting index")
    finally:
        stop_all(workers)
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    duplicates = len(delivered) - len(set(delivered))
    worst = max(max_in_window([ms(d["receivedAt"]) for d in got if d["accountId"] == a], WINDOW_MS) for a in accounts)
    rebuilt = rebuilds("lost", 2)
    after_loss = [r for r in rebuilt if r["added"] > 0]
    figure("redis_data_lost", messages=len(ids), duplicates=duplicates, leases_at_loss=held, worst_window_count=worst, rebuilt=after_loss,
           last_delivery_after_loss_ms=round(max(ms(d["receivedAt"]) for d in got) - lost_at))
    assert set(delivered) == set(ids), f"{len(set(ids) - set(delivered))} messages lost"
    assert duplicates <= held, f"{duplicates} sent twice: at most what the workers held at the loss ({held})"
    assert worst <= MAX
    assert len(after_loss) == 1, f"one worker rebuilt the schedule, putting back what waited: {rebuilt}"
    for a in accounts:
        assert summary(system, a).get("queued", 0) == 0
