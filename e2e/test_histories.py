"""The history checker in the test command: fixed seeds, each a random interleaving of
operations and faults carried out against the real system and checked against its
promises (see e2e/histories). Each seed here found a defect before it was fixed (issue
19, the closing note names which), or covers a combination the others do not; random
seeds run in bench/histories.sh."""

import pytest

from histories import plan as plans
from histories import session
from histories.system import HistorySystem

# (seed, on a Redis Cluster, what it found before its fix / what it covers)
SEEDS = [
    (920506247, False, "a retry inside a campaign: its campaign's counts unlike its items, its content gone while recipients waited; a canceled campaign reporting in-flight messages canceled"),
    (1447749115, False, "no burst floor after a FLUSHALL (11 in a window); a loss taken for a new schedule when the ledger had no record"),
    (1065534371, False, "sends while paused after a FLUSHALL; a SIGTERM with a slow ledger dropping delivered outcomes (stuck `sending`)"),
    (396033780, False, "a Redis restarted from an older snapshot: the loss never noticed, messages stuck `queued`, finished ones resurrected"),
    (875842157, False, "an idempotent retry after a 503 delivered twice; a campaign deleted after an SQS answer lost though a worker had it"),
    (1410002757, False, "a campaign canceled while a killed worker's claim held one of its messages: that message refused and taken again forever, each time spending its account's slot (the account slowed to a send every 7-40 s, the message stuck `sending`)"),
    (1850051005, False, "a Redis restarted from an older snapshot holding a campaign whose list had run empty: its content and count left in Redis for ever"),
    (1833763631, False, "a FLUSHALL while a campaign's message hung at the gateway: the rebuilt copy, not knowing it was maybe sent, refused by its canceled campaign's guard and dropped, the message `queued` for ever"),
    (1215484789, False, "a Redis restarted from a snapshot taken while an account was held: the rebuild's hold from the ledger taken for a control seen already, and the account sent while held"),
    (265746574, False, "a Redis restarted from an older snapshot, rebuilt from the ledger with a campaign's waiting messages one by one; the campaign canceled then: those messages left on the schedule, each taken, refused and its slot given back, the account idle 1.5 s with messages ready"),
    (752570085, False, "a worker killed while a campaign's message hung at the gateway; the campaign canceled; the claim taken over once it lapsed came too late for its slot and was given back as never tried, and the next claim canceled a message the gateway had received (sent and canceled); the killed worker's leases holding its accounts' slots"),
    (1838218566, False, "a retry whose ledger write landed with every answer lost (the edge answered 503): the message `queued` in the ledger with no queue copy, for ever, and its counters still counting it failed"),
    (195537539, True, "on a cluster: a message claimed then given back stuck `sending`"),
    (1800176231, True, "on a cluster: a 429 met between a FLUSHALL and the rebuild's clearing of the shard forgotten (a send during its Retry-After)"),
    (813478255, True, "on a cluster: a worker killed mid-rebuild held its shard back for the rebuild lock's 30 s"),
    (606442945, True, "on a cluster: a rebuild scheduling a campaign's messages one by one while its redelivered list scheduled them again; the finished copies refused one at a time, each slot given back but the take loop asleep until its planned wake-up (the account idle 1.2-2 s with messages ready)"),
]


@pytest.fixture(scope="module")
def systems():
    made = {}

    def get(cluster: bool) -> HistorySystem:
        if cluster not in made:
            made[cluster] = HistorySystem(cluster)
        return made[cluster]

    yield get
    for s in made.values():
        s.stop()


@pytest.mark.parametrize("seed,cluster,found", SEEDS, ids=[f"{s}{'-cluster' if c else ''}" for s, c, _ in SEEDS])
def test_a_history_keeps_every_promise(systems, seed, cluster, found):
    plan = plans.generate(seed, cluster)
    h, violations = session.run(systems(cluster), plan, f"t{seed % 100000}")
    assert not violations, f"{found}\n" + session.report(plan, violations, h)
