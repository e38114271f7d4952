"""The history checker's own reading of a history, without a system: what it takes for
sure, what it takes as possible. A checker that reads a history wrong either cries wolf
(a random run fails on a correct system) or stays silent on a real defect."""

from histories.check import Checker
from histories.run import History

A = "acc-0"


def checker(*controls) -> Checker:
    """A checker over a history of account controls: (kind, asked at, answered at, status)."""
    events = [{"kind": k, "t": t, "t0": t0, "account": A, "status": status, "op": n}
              for n, (k, t0, t, status) in enumerate(controls)]
    return Checker(History(plan=None, prefix="p:", accounts=[A], started_ms=0, events=events))


def test_a_pause_and_a_resume_answered_200_make_one_sure_span():
    c = checker(("pause", 1000, 1050, 200), ("resume", 5000, 5040, 200))
    assert c.paused_spans(A) == [(1050, 5000)]
    assert c.paused_spans(A, maybe=True) == [(1050, 5000)]


def test_a_pause_answered_503_may_have_paused_until_the_next_sure_resume():
    # Seed 1739701290 on a cluster: the pause's control reached the queue, its answer was
    # lost, the edge answered 503, and the worker held the account all the same.
    c = checker(("pause", 1000, 1500, 503), ("resume", 4000, 4100, 503), ("resume", 9000, 9030, 200))
    assert c.paused_spans(A) == []
    assert c.paused_spans(A, maybe=True) == [(1000, 9000)]


def test_a_resume_answered_503_ends_the_sure_pause_but_not_the_possible_one():
    c = checker(("pause", 1000, 1050, 200), ("resume", 3000, 3400, 503), ("resume", 8000, 8020, 200))
    assert c.paused_spans(A) == [(1050, 3000)]
    assert c.paused_spans(A, maybe=True) == [(1050, 8000)]


def test_a_refused_control_takes_no_effect_either_way():
    c = checker(("pause", 1000, 1010, 429), ("pause", 2000, 2030, 200), ("resume", 3000, 3010, 400))
    assert c.paused_spans(A) == [(2030, float("inf"))]
    assert c.paused_spans(A, maybe=True) == [(2030, float("inf"))]


def test_a_campaign_cancel_answered_503_may_have_canceled_it():
    # Seed 586672821: the cancel's ledger mark was made, the notice to the worker was not
    # queued, the edge answered 503; the campaign was canceled all the same.
    events = [{"kind": "cancel_campaign", "t": 2000, "id": "c1", "account": A, "status": 503, "op": 0},
              {"kind": "cancel_campaign", "t": 3000, "id": "c2", "account": A, "status": 200, "op": 1}]
    c = Checker(History(plan=None, prefix="p:", accounts=[A], started_ms=0, events=events))
    assert c.campaign_maybe_canceled("c1") and not c.campaign_canceled("c1")
    assert c.campaign_canceled("c2") and not c.campaign_maybe_canceled("c2")
    assert not c.campaign_maybe_canceled("c3")


def test_a_marker_in_its_last_millisecond_is_not_a_leak():
    # CI, seed 1410002757: a worker's last take read with PTTL 0 (it expires within the
    # millisecond) was reported as left in Redis. A key without expiry (-1) still is.
    h = History(plan=None, prefix="p:", accounts=[A], started_ms=0, events=[])
    h.final = {"keys": {"p:took:w1": 0, "p:took:w2": 10_000, "p:took:w3": -1, "p:took:w4": -2}}
    c = Checker(h)
    c.keys()
    assert [v.detail for v in c.v] == ["p:took:w3 left in Redis (ttl -1 ms)"]


def test_a_ledger_found_slow_by_a_worker_excuses_an_idle_account_meanwhile():
    # CI, seeds 1838218566 and 1833763631: no fault injected, the emulator slow on a busy
    # machine; claims came back after the take's lead and were given back unsent (as the
    # limit requires), so the account sent nothing for ~1.4 s.
    events = [{"kind": "send", "t": 0, "t0": 0, "account": A, "status": 202, "op": 0}]
    h = History(plan=None, prefix="p:", accounts=[A], started_ms=0, events=events)
    h.final = {"slow_claims": [(5000, 450)]}
    assert (4350, 8000) in Checker(h).impaired
    assert Checker(History(plan=None, prefix="p:", accounts=[A], started_ms=0, events=events)).impaired == []
