"""The generator: a seed becomes a plan, a list of timed operations and faults over a
few accounts. Pure: the same seed gives the same plan, so a failing seed is a test.

Swarm testing (Groce et al., 2012): each seed enables a random subset of the kinds of
operation and fault, so that a history dwells on a few features at once and reaches
their rarer meetings (a retry inside a campaign, a pause across a Redis loss) more
often than a uniform mix of everything would.

What the gateway answers is decided per message: its recipient id carries a behaviour
(`...-r0007-429`), and the driver installs a gateway-stub rule for that recipient
alone. Targets of cancels, retries and duplicates are picked when the operation runs,
among what the history holds then (`pick`, a number in [0, 1)), as a user would.
"""

import random
from dataclasses import asdict, dataclass, field

# How the gateway answers a message, and how often (weights).
BEHAVIOURS = {
    "ok": 70,
    "400": 6,  # refused for good once (a retry succeeds)
    "400x": 2,  # refused for good every time
    "503": 7,  # fails once, then delivered
    "503x": 2,  # fails every time: failed after MAX_ATTEMPTS
    "429": 6,  # rate limited once, Retry-After in seconds
    "429d": 2,  # rate limited once, Retry-After as an HTTP date
    "hang": 3,  # answered after the worker's timeout, once: it arrived, then goes again
}

# Operations (always some single sends and a campaign) and faults, with weights.
OPERATIONS = {
    "send": 30,
    "campaign": 5,
    "scheduled": 5,  # a single send with sendAt a few seconds ahead
    "far": 1,  # a single send with sendAt a day and a half ahead (canceled when healing)
    "cancel": 6,
    "cancel_burst": 2,  # the newest few messages of one account
    "cancel_campaign": 3,
    "retry": 5,  # failed messages from GET /failed
    "pause": 3,  # and its resume, a few seconds later
    "dup": 5,  # an SQS duplicate of a queue message the edge wrote
}
FAULTS = {
    "kill9": 3,  # a worker, restarted a moment later
    "term": 2,  # a worker, with the ledger slowed meanwhile
    "stop": 3,  # SIGSTOP a worker, SIGCONT after 1-5 s (past the 3 s lease at times)
    "flushall": 3,  # Redis loses everything
    "stale": 2,  # Redis restarts from an older snapshot
    "ledger": 4,  # the workers' DynamoDB calls fail, slow or lose their answers
    "worker_sqs": 1,  # the workers' SQS calls fail
    "edge_aws": 2,  # the edge's SQS or DynamoDB calls fail
    "forget_schedules": 1,  # the ledger restored from a backup older than the schedule
    "failover": 3,  # cluster: a replica promoted by hand
    "kill_primary": 2,  # cluster: a primary killed, its replica promoted
}
CLUSTER_ONLY = {"failover", "kill_primary"}
SINGLE_ONLY = {"stale"}


@dataclass
class Op:
    n: int  # position in the plan (stable across shrinking: how a report names it)
    at: float  # seconds from the start
    kind: str
    args: dict = field(default_factory=dict)

    def describe(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.args.items() if k != "behaviours")
        if "behaviours" in self.args:
            counts = {}
            for b in self.args["behaviours"]:
                counts[b] = counts.get(b, 0) + 1
            args += " recipients=" + ",".join(f"{b}:{c}" for b, c in sorted(counts.items()))
        return f"#{self.n} t={self.at:5.2f}s {self.kind} {args}".rstrip()


@dataclass
class Plan:
    seed: int
    cluster: bool
    accounts: int
    duration: float
    features: list
    ops: list

    def without(self, drop: set) -> "Plan":
        """The plan less the operations numbered in `drop` (a resume goes with its pause)."""
        dropped = set(drop)
        for op in self.ops:
            if op.kind == "resume" and op.args.get("pause") in dropped:
                dropped.add(op.n)
        return Plan(self.seed, self.cluster, self.accounts, self.duration, self.features, [o for o in self.ops if o.n not in dropped])

    def to_json(self) -> dict:
        return {**asdict(self), "ops": [asdict(o) for o in self.ops]}

    @staticmethod
    def from_json(d: dict) -> "Plan":
        return Plan(d["seed"], d["cluster"], d["accounts"], d["duration"], d["features"], [Op(**o) for o in d["ops"]])


def _weighted(rng: random.Random, weights: dict) -> str:
    names = sorted(weights)
    return rng.choices(names, [weights[n] for n in names])[0]


def generate(seed: int, cluster: bool = False, duration: float = 20.0) -> Plan:
    rng = random.Random(seed)
    accounts = rng.randint(2, 3)
    # Swarm: each kind of operation and fault is on with probability 1/2 (sends and
    # campaigns always), so each history dwells on a few features.
    ops_on = {k: w for k, w in OPERATIONS.items() if k in ("send", "campaign") or rng.random() < 0.5}
    faults_on = {k: w for k, w in FAULTS.items()
                 if (k not in CLUSTER_ONLY or cluster) and (k not in SINGLE_ONLY or not cluster) and rng.random() < 0.5}
    behaviours_on = {k: w for k, w in BEHAVIOURS.items() if k == "ok" or rng.random() < 0.6}
    features = sorted(ops_on) + sorted(faults_on) + [f"gw:{b}" for b in sorted(behaviours_on)]

    ops: list[Op] = []

    def add(at, kind, **args):
        ops.append(Op(len(ops), round(at, 3), kind, args))
        return ops[-1]

    def behaviour():
        return _weighted(rng, behaviours_on)

    # A burst of work at the start, so that accounts have a backlog the faults meet.
    for a in range(accounts):
        add(rng.uniform(0, 0.5), "campaign", account=a, behaviours=[behaviour() for _ in range(rng.randint(8, 20))],
            priority=rng.randint(1, 10), send_at=None)
    t = 0.5
    while True:
        t += rng.expovariate(4.0)  # about 4 operations a second
        if t >= duration:
            break
        kind = _weighted(rng, ops_on)
        a = rng.randrange(accounts)
        if kind == "send":
            add(t, "send", account=a, behaviour=behaviour(), priority=rng.randint(1, 10), send_at=None)
        elif kind == "scheduled":
            add(t, "send", account=a, behaviour=behaviour(), priority=rng.randint(1, 10), send_at=round(rng.uniform(1, 6), 2))
        elif kind == "far":
            add(t, "send", account=a, behaviour="ok", priority=5, send_at=36 * 3600)
        elif kind == "campaign":
            send_at = round(rng.uniform(1, 5), 2) if rng.random() < 0.3 else None
            add(t, "campaign", account=a, behaviours=[behaviour() for _ in range(rng.randint(3, 25))], priority=rng.randint(1, 10),
                send_at=send_at)
        elif kind == "cancel":
            add(t, "cancel", account=a, pick=round(rng.random(), 4))
        elif kind == "cancel_burst":
            add(t, "cancel_burst", account=a, count=rng.randint(3, 8), pick=round(rng.random(), 4))
        elif kind == "cancel_campaign":
            add(t, "cancel_campaign", pick=round(rng.random(), 4))
        elif kind == "retry":
            add(t, "retry", account=a, pick=round(rng.random(), 4), all=rng.random() < 0.3)
        elif kind == "pause":
            pause = add(t, "pause", account=a)
            add(min(t + rng.uniform(1.5, 6), duration), "resume", account=a, pause=pause.n)
        elif kind == "dup":
            add(t, "dup", pick=round(rng.random(), 4), late=rng.random() < 0.4)
    # Faults: a few per history, anywhere after the first second.
    if faults_on:
        for _ in range(rng.randint(1, 4)):
            at = rng.uniform(1, duration - 1)
            kind = _weighted(rng, faults_on)
            if kind == "kill9":
                add(at, kind, worker=rng.randrange(2), down=round(rng.uniform(0.2, 2), 2))
            elif kind == "term":
                add(at, kind, worker=rng.randrange(2), down=round(rng.uniform(0.2, 2), 2), slow_ledger=rng.random() < 0.6)
            elif kind == "stop":
                add(at, kind, worker=rng.randrange(2), secs=round(rng.uniform(1, 5), 2))
            elif kind == "stale":
                add(at, "snapshot")
                add(min(at + rng.uniform(1.5, 5), duration), "stale")
            elif kind == "ledger":
                mode = rng.choice(["error", "throttle", "lose", "delay", "drop"])
                match = rng.choice(["TransactWriteItems", "BatchGetItem", "Query", "PutItem", "UpdateItem", ":sending"])
                add(at, kind, mode=mode, match=match, secs=round(rng.uniform(0.5, 3), 2), delay=round(rng.uniform(0.3, 1.5), 2))
            elif kind == "worker_sqs":
                add(at, kind, mode=rng.choice(["error", "throttle", "drop"]), secs=round(rng.uniform(0.5, 3), 2))
            elif kind == "edge_aws":
                add(at, kind, match=rng.choice(["AmazonSQS.SendMessage", "PutItem", "TransactWriteItems", "UpdateItem"]),
                    mode=rng.choice(["error", "lose"]), secs=round(rng.uniform(0.5, 2), 2))
            elif kind == "forget_schedules":
                add(at, kind)
                add(min(at + rng.uniform(0.5, 3), duration), "flushall")
            elif kind == "kill_primary":
                add(at, kind, down=round(rng.uniform(3, 8), 2))
            else:
                add(at, kind)
    # Meetings: faults are made to meet the operations whose interplay with them matters,
    # which independent timing would make rare. A send right after Redis loses its data
    # (before the loss is noticed); a pause or resume while the edge's AWS calls fail; a
    # loss while an account is paused.
    for op in list(ops):
        if op.kind in ("flushall", "stale", "kill_primary"):
            add(op.at + rng.uniform(0.02, 0.3), "send", account=rng.randrange(accounts), behaviour="ok", priority=rng.randint(1, 10), send_at=None)
        elif op.kind == "edge_aws":
            add(op.at + rng.uniform(0, op.args["secs"]), rng.choice(["pause", "resume"]), account=rng.randrange(accounts), pause=None)
    pauses = [o for o in ops if o.kind == "pause"]
    if pauses and "flushall" in faults_on:
        # A loss while an account is paused with messages waiting.
        p = rng.choice(pauses)
        resume = next((o for o in ops if o.kind == "resume" and o.args.get("pause") == p.n), None)
        end = resume.at if resume else duration
        flush = rng.uniform(p.at + 0.5, max(p.at + 0.6, end - 0.3))
        for _ in range(3):
            add(rng.uniform(p.at, flush), "send", account=p.args["account"], behaviour="ok", priority=rng.randint(1, 10), send_at=None)
        add(flush, "flushall")
    ops.sort(key=lambda o: (o.at, o.n))
    return Plan(seed, cluster, accounts, duration, features, ops)
