"""The worker on a Redis Cluster (3 primaries, 3 replicas of Debian's redis-server on
loopback, devstack/cluster.py), with the same real parts as test_worker.py: the edge
under `wrangler dev`, the AWS emulator, the gateway stub, two worker processes with a
schedule of 8 shards, each take waiting for its replica (`REDIS_WAIT_REPLICAS=1`). A replica promoted by hand (`CLUSTER FAILOVER`) and a primary
killed (`kill -9`) mid-run, then a cluster that loses all its data: nothing lost,
duplicates counted (only what was in flight), no rolling window over the limit."""

import signal
import time
import uuid

import pytest

from harness import LOGS, MAX, System, WINDOW_MS, epoch_key, fans, figure, max_in_window, ms, rebuilds, stop_all, wait_for as wait_until, wait_statuses
from devstack.cluster import Cluster

SHARDS = 8


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


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(LOGS / "redis-cluster")
    yield c
    c.stop()


def start_cluster_workers(system, cluster, prefix, n=2):
    return system.start_workers(prefix, n=n, REDIS_URL=cluster.urls, REDIS_CLUSTER="true", SCHEDULE_SHARDS=str(SHARDS),
                                REDIS_WAIT_REPLICAS="1")


def send_load(system, accounts):
    """20 messages per account: one at a time for the first half, a campaign for the rest."""
    ids = []
    for i, a in enumerate(accounts):
        if i % 2:
            ids += system.send(a, fans(a, 20))
        else:
            ids += [system.send(a, [f"{a}-fan-{k}"])[0] for k in range(20)]
    return ids


def delivered_and_recorded(system, accounts, ids, timeout):
    system.wait_delivered(ids, timeout=timeout)
    for a in accounts:
        wait_statuses(system, a, 20)


def check(system, accounts, ids, name, **figures):
    """Records the run's figure, then: every id delivered, no more duplicates than one per
    account (what was in flight at the failure), no window over the limit."""
    got = system.deliveries(set(accounts))
    delivered = [d["messageId"] for d in got]
    duplicates = len(delivered) - len(set(delivered))
    worst = max(max_in_window([ms(d["receivedAt"]) for d in got if d["accountId"] == a], WINDOW_MS) for a in accounts)
    figure(name, messages=len(ids), duplicates=duplicates, worst_window_count=worst,
           **{k: (v(got) if callable(v) else v) for k, v in figures.items()})
    assert set(delivered) == set(ids), f"{len(set(ids) - set(delivered))} messages lost"
    assert duplicates <= len(accounts), f"{duplicates} sent twice: at most what was in flight at the failure"
    assert worst <= MAX


def test_workers_on_a_cluster_keep_the_limit_through_failovers(system, cluster):
    accounts = [f"clu-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    workers = start_cluster_workers(system, cluster, "clu")
    try:
        ids = send_load(system, accounts)
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 20, 30, "deliveries under way")
        # A replica promoted by hand, under an account that still has messages waiting:
        # the old primary hands over, nothing is lost, the account goes on.
        busy = waiting_account(system, accounts)
        promoted = cluster.replica_of(cluster.primary_of(epoch_key("clu", busy, SHARDS)))
        cluster.cli(promoted, "CLUSTER", "FAILOVER")
        wait_until(lambda: promoted in cluster.primaries(promoted), 20, f"{promoted} promoted")
        cluster.wait_ok()
        failover_at = time.time() * 1000
        wait_until(lambda: [d for d in system.deliveries({busy}) if ms(d["receivedAt"]) > failover_at], 20, f"{busy} sending after the failover")
        # A primary killed under another account with messages waiting: its replica takes
        # over after the node timeout (2 s), and the account goes on.
        other = waiting_account(system, [a for a in accounts if a != busy])
        victim = cluster.primary_of(epoch_key("clu", other, SHARDS))
        heir = cluster.replica_of(victim)
        cluster.parts[victim].stop(signal.SIGKILL)
        killed_at = time.time() * 1000
        wait_until(lambda: heir in cluster.primaries(heir), 30, f"{heir} promoted after {victim} was killed")
        cluster.wait_ok()
        recovered_in = time.time() * 1000 - killed_at
        wait_until(lambda: [d for d in system.deliveries({other}) if ms(d["receivedAt"]) > killed_at + recovered_in], 30, f"{other} sending after the kill")
        delivered_and_recorded(system, accounts, ids, timeout=90)
    finally:
        stop_all(workers)
    check(system, accounts, ids, "cluster_failovers", replica_promoted_after_kill_ms=round(recovered_in),
          after_manual_failover_ms=lambda got: round(max(ms(d["receivedAt"]) for d in got) - failover_at))
    # Every take that leased messages waited for its replica (REDIS_WAIT_REPLICAS=1).
    waits = sum(int(line.split("calls=")[1].split(",")[0]) for p in cluster.primaries() for line in cluster.cli(p, "INFO", "commandstats").splitlines()
                if line.startswith("cmdstat_wait:"))
    assert waits > 0, "no WAIT reached the primaries"


def waiting_account(system, accounts):
    """One of `accounts` with the most messages not yet delivered (20 each)."""
    sent = {a: 0 for a in accounts}
    for d in system.deliveries(set(accounts)):
        sent[d["accountId"]] += 1
    account = min(accounts, key=lambda a: sent[a])
    assert sent[account] < 15, f"{account} has too little left to send: {sent}"
    return account


def test_a_cluster_losing_its_data_mid_run_loses_no_message(system, cluster):
    """FLUSHALL on every primary mid-run: each shard's epoch is gone, the workers rebuild
    the shards from the ledger, every message is delivered once more at most."""
    accounts = [f"clw-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    workers = start_cluster_workers(system, cluster, "clw")
    try:
        ids = send_load(system, accounts)
        wait_until(lambda: len(system.deliveries(set(accounts))) >= 15, 30, "deliveries under way")
        for p in cluster.primaries():
            cluster.cli(p, "FLUSHALL")
        delivered_and_recorded(system, accounts, ids, timeout=60)
    finally:
        stop_all(workers)
    rebuilt = [r for r in rebuilds("clw", 2) if r["added"] > 0]
    check(system, accounts, ids, "cluster_data_lost", rebuilt=rebuilt)
    assert rebuilt, "the shards were rebuilt from the ledger"
