"""The driver: carries a plan out against the real system in real time and records the
history, then heals the system (faults off, workers back, paused accounts resumed,
far-off messages canceled), waits until it has settled and collects everything it says
(the gateway's records, the ledger, every API view, the keys left in Redis).

Requests run concurrently on a thread pool at their planned times; a send answered 5xx
is tried again with the same `Idempotency-Key`, as a client should. Every request and
answer, every fault and its end, are events with wall-clock times in ms (the gateway
stub's clock is the same machine's)."""

import email.utils
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from devstack import stack
from harness import BASE, epoch_key, token
from histories import system as hs
from histories.plan import Plan

RETRY_AFTER_SECONDS = (1, 2)
SETTLE_TIMEOUT = 120
FAR_AHEAD_S = 36 * 3600


def now_ms() -> float:
    return time.time() * 1000


def ambiguous(status) -> bool:
    """An answer that does not say whether the request took effect: no answer at all, or
    a 5xx (the edge may have queued a control, say, and lost the queue's answer)."""
    return status is None or status >= 500


def choose(items: list, pick: float):
    """The item at `pick` (in [0, 1]) of a list, the same for the same list."""
    return items[min(len(items) - 1, int(pick * len(items)))]


@dataclass
class Message:
    """A message the edge accepted (or may have: a send answered 5xx whose id is unknown)."""

    id: str | None
    account: str
    recipient: str
    behaviour: str
    op: int
    accepted_ms: float
    send_at_ms: float | None
    campaign: str | None = None
    content: str = ""
    priority: int = 5
    media: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


@dataclass
class History:
    plan: Plan
    prefix: str
    accounts: list
    started_ms: float = 0
    events: list = field(default_factory=list)
    messages: dict = field(default_factory=dict)  # id -> Message
    unknown: list = field(default_factory=list)  # Messages of sends that were never answered 202
    campaigns: dict = field(default_factory=dict)  # id -> {account, ids, op, accepted_ms, send_at_ms}
    final: dict = field(default_factory=dict)  # what the system says once settled
    settled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def event(self, kind: str, **data) -> dict:
        e = {"kind": kind, "t": round(now_ms()), **data}
        with self.lock:
            self.events.append(e)
        return e

    def of(self, kind: str) -> list:
        with self.lock:
            return [e for e in self.events if e["kind"] == kind]

    def to_json(self) -> dict:
        return {
            "plan": self.plan.to_json(), "prefix": self.prefix, "accounts": self.accounts, "started_ms": self.started_ms,
            "events": self.events, "messages": {k: vars(m) for k, m in self.messages.items()},
            "unknown": [vars(m) for m in self.unknown], "campaigns": self.campaigns, "settled": self.settled,
        }

    @staticmethod
    def load(directory) -> "History":
        """A history saved by `session.run` (history.json and final.json), to check again."""
        import pathlib
        d = json.loads((pathlib.Path(directory) / "history.json").read_text())
        h = History(Plan.from_json(d["plan"]), d["prefix"], d["accounts"], d["started_ms"], d["events"],
                    {k: Message(**m) for k, m in d["messages"].items()}, [Message(**m) for m in d["unknown"]], d["campaigns"],
                    settled=d["settled"])
        h.final = json.loads((pathlib.Path(directory) / "final.json").read_text())
        return h


class Driver:
    def __init__(self, system: hs.HistorySystem, plan: Plan, name: str):
        self.sys = system
        self.plan = plan
        nonce = os.urandom(3).hex()
        self.prefix = f"{name}{nonce}:"  # the workers' REDIS_KEY_PREFIX
        accounts = [f"{name}{nonce}-{i}" for i in range(plan.accounts)]
        self.h = History(plan, self.prefix, accounts)
        self.tokens = {a: token(a, exp_in=3600) for a in accounts}
        self.pool = ThreadPoolExecutor(max_workers=12)
        self.timers = []
        self.recipients = 0
        self.held = {}  # account -> whether its last successful control was a pause
        self.restarting = set()

    # --- the edge

    def call(self, method: str, path: str, account: str, body=None, headers=None):
        h = {"authorization": f"Bearer {self.tokens[account]}", **(headers or {})}
        try:
            r = requests.request(method, self.sys.edge.url + BASE + path, json=body, headers=h, timeout=30)
            try:
                answer = r.json()
            except ValueError:
                answer = r.text
            return r.status_code, answer
        except requests.RequestException as e:
            return None, str(e)

    def recipient(self, account: str, behaviour: str) -> str:
        with self.h.lock:
            self.recipients += 1
            n = self.recipients
        r = f"{account}-r{n:04d}-{behaviour}"
        rules = {
            "400": {"status": 400, "count": 1}, "400x": {"status": 400},
            "503": {"status": 503, "count": 1}, "503x": {"status": 503},
            "429": {"status": 429, "count": 1, "retryAfter": RETRY_AFTER_SECONDS[n % 2]},
            "429d": {"status": 429, "count": 1, "retryAfter": email.utils.formatdate(time.time() + 3 + n % 4, usegmt=True)},
            "hang": {"status": 202, "count": 1, "delayMs": hs.GATEWAY_TIMEOUT_MS + 600},
        }
        if behaviour in rules:
            self.sys.rule(recipientPattern=r, **rules[behaviour])
        return r

    def send(self, op, recipients, behaviours):
        account = self.h.accounts[op.args["account"]]
        content = f"seed {self.plan.seed} op {op.n}: " + "x" * (op.n % 7 * 40)
        body = {"content": content, "priority": op.args["priority"]}
        if op.n % 3 == 0:
            body["mediaUrls"] = [f"https://cdn.example.com/{op.n}.jpg"]
        if op.n % 4 == 0:
            body["metadata"] = {"op": op.n, "seed": self.plan.seed}
        send_at_ms = None
        if op.args.get("send_at"):
            send_at_ms = now_ms() + op.args["send_at"] * 1000
            body["sendAt"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(send_at_ms / 1000)) + f".{int(send_at_ms % 1000):03d}Z"
        if len(recipients) == 1:
            body["recipientId"] = recipients[0]
        else:
            body["recipientIds"] = recipients
        key = f"{self.prefix}{op.n}"
        for attempt in range(4):
            t0 = now_ms()
            status, answer = self.call("POST", "/send", account, body, {"idempotency-key": key})
            self.h.event("send", op=op.n, account=account, attempt=attempt, status=status, t0=round(t0), answer=answer if status != 202 else None)
            if status == 202 or (status is not None and status < 500):
                break
            time.sleep(0.5)
        make = lambda mid, r, b, cid=None: Message(mid, account, r, b, op.n, now_ms(), send_at_ms, cid, content,  # noqa: E731
                                                     op.args["priority"], body.get("mediaUrls", []), body.get("metadata", {}))
        if status != 202:
            with self.h.lock:
                self.h.unknown += [make(None, r, b) for r, b in zip(recipients, behaviours)]
            return
        with self.h.lock:
            if "campaignId" in answer:
                cid = answer["campaignId"]
                ids = [m["messageId"] for m in answer["messages"]]
                self.h.campaigns[cid] = {"account": account, "ids": ids, "op": op.n, "accepted_ms": now_ms(), "send_at_ms": send_at_ms,
                                         "total": len(ids)}
                for mid, r, b in zip(ids, recipients, behaviours):
                    self.h.messages[mid] = make(mid, r, b, cid)
            else:
                self.h.messages[answer["messageId"]] = make(answer["messageId"], recipients[0], behaviours[0])

    def waiting_of(self, account: str) -> list:
        """Messages of `account` not known to be finished, oldest first."""
        canceled = {e["id"] for e in self.h.of("cancel") if e["status"] == 200}
        with self.h.lock:
            return [m for m in self.h.messages.values() if m.account == account and m.id not in canceled]

    # --- operations

    def do(self, op) -> None:
        a = self.h.accounts[op.args["account"]] if "account" in op.args else None
        k = op.kind
        if k == "send":
            b = op.args["behaviour"]
            self.send(op, [self.recipient(a, b)], [b])
        elif k == "campaign":
            bs = op.args["behaviours"]
            self.send(op, [self.recipient(a, b) for b in bs], bs)
        elif k == "cancel":
            candidates = [m for m in self.waiting_of(a) if m.accepted_ms > now_ms() - 8000 or (m.send_at_ms or 0) > now_ms()]
            if candidates:
                self.cancel(choose(sorted(candidates, key=lambda m: m.id), op.args["pick"]), op)
        elif k == "cancel_burst":
            # A run of consecutive messages of the account's backlog (priority, then age),
            # from a random place: the schedule meets them one after another.
            sent = {d["messageId"] for d in self.sys.gateway_records("deliveries", a)}
            backlog = sorted((m for m in self.waiting_of(a) if m.id not in sent), key=lambda m: (m.priority, m.accepted_ms))
            start = int(op.args["pick"] * max(0, len(backlog) - op.args["count"]))
            for m in backlog[start:start + op.args["count"]]:
                self.cancel(m, op)
        elif k == "cancel_campaign":
            with self.h.lock:
                cids = sorted(self.h.campaigns)
            if cids:
                cid = choose(cids, op.args["pick"])
                account = self.h.campaigns[cid]["account"]
                status, answer = self.call("DELETE", f"/campaigns/{cid}", account)
                self.h.event("cancel_campaign", op=op.n, id=cid, account=account, status=status, answer=answer)
        elif k == "retry":
            status, page = self.call("GET", "/failed?limit=100", a)
            failed = sorted(m["id"] for m in page.get("failedMessages", [])) if status == 200 else []
            chosen = failed if op.args["all"] or not failed else [choose(failed, op.args["pick"])]
            for mid in chosen:
                status, answer = self.call("POST", f"/{mid}/retry", a)
                self.h.event("retry", op=op.n, id=mid, account=a, status=status, answer=answer)
        elif k in ("pause", "resume"):
            t0 = now_ms()
            status, answer = self.call("POST", f"/account/{k}", a)
            self.h.event(k, op=op.n, account=a, status=status, t0=round(t0), answer=answer)
            if status == 200:
                self.held[a] = k == "pause"
            elif k == "pause" and ambiguous(status):
                # Perhaps queued all the same (an answer lost after SQS took the control):
                # the healer resumes it, which is harmless if the pause never took.
                self.held[a] = True
        elif k == "dup":
            self.duplicate(op)
        else:
            self.fault(op)

    def cancel(self, m: Message, op) -> None:
        t0 = now_ms()
        status, answer = self.call("DELETE", f"/{m.id}", m.account)
        self.h.event("cancel", op=op.n, id=m.id, account=m.account, status=status, t0=round(t0), answer=answer)

    def duplicate(self, op) -> None:
        """Hands a queue message the edge wrote to SQS again, as SQS may."""
        with self.sys.edge_proxy.lock:
            bodies = [json.loads(b) for _, b in self.sys.edge_proxy.recorded]
        mine = [b for b in bodies if any(a in b.get("MessageBody", "") for a in self.h.accounts)]
        if op.args.get("late"):
            # A copy of a message delivered already (SQS can hand one over days later).
            delivered = {d["messageId"] for a in self.h.accounts for d in self.sys.gateway_records("deliveries", a)}
            mine = [b for b in mine if json.loads(b["MessageBody"]).get("id") in delivered] or mine
        if not mine:
            return
        mine.sort(key=lambda b: b["MessageBody"])
        b = choose(mine, op.args["pick"])
        attrs = {k: {kk: vv for kk, vv in v.items()} for k, v in b.get("MessageAttributes", {}).items()}
        self.sys.sqs.send_message(QueueUrl=self.sys.aws.queue_url, MessageBody=b["MessageBody"], MessageAttributes=attrs)
        body = json.loads(b["MessageBody"])
        self.h.event("dup", op=op.n, of=body.get("id") or body.get("campaign") or body.get("control"), body=body)

    # --- faults

    def later(self, seconds: float, f) -> None:
        t = threading.Timer(seconds, f)
        t.daemon = True
        self.timers.append(t)
        t.start()

    def restart(self, i: int, fault: dict) -> None:
        if i not in self.sys.workers:
            self.sys.start_worker(i)
        fault["restarted"] = round(now_ms())
        self.restarting.discard(i)

    def fault(self, op) -> None:
        k, args = op.kind, op.args
        f = self.h.event("fault", op=op.n, fault=k, args=args)
        if k in ("kill9", "term"):
            i = args["worker"]
            if i not in self.sys.workers or i in self.restarting:
                f["skipped"] = True
                return
            self.restarting.add(i)
            if k == "term" and args.get("slow_ledger"):
                self.sys.worker_proxy.fail("TransactWriteItems", mode="delay", delay=hs.SLOW_LEDGER_DELAY_S, seconds=hs.SLOW_LEDGER_S)
            part = self.sys.workers.pop(i)
            self.sys.signal_part(part, signal.SIGCONT)
            part.stop(signal.SIGKILL if k == "kill9" else signal.SIGTERM, grace=20)
            f["exited"], f["rc"] = round(now_ms()), part.proc.returncode
            self.later(args["down"], lambda: self.restart(i, f))
        elif k == "stop":
            i = args["worker"]
            if i not in self.sys.workers:
                f["skipped"] = True
                return
            self.sys.send_signal(i, signal.SIGSTOP)

            def cont():
                self.sys.send_signal(i, signal.SIGCONT)
                f["continued"] = round(now_ms())
            self.later(args["secs"], cont)
        elif k == "flushall":
            self.sys.flushall()
        elif k == "snapshot":
            self.sys.snapshot()
        elif k == "stale":
            f["restored"] = self.sys.restart_from_snapshot()
            f["end"] = round(now_ms())
        elif k == "ledger":
            self.sys.worker_proxy.fail(args["match"], mode=args["mode"], seconds=args["secs"], delay=args["delay"])
        elif k == "worker_sqs":
            self.sys.worker_proxy.fail("AmazonSQS.", mode=args["mode"], seconds=args["secs"])
        elif k == "edge_aws":
            self.sys.edge_proxy.fail(args["match"], mode=args["mode"], seconds=args["secs"])
        elif k == "forget_schedules":
            f["forgotten"] = self.sys.forget_schedules()
        elif k in ("failover", "kill_primary"):
            self.cluster_fault(op, f)
        f["end"] = f.get("end", round(now_ms()))

    def cluster_fault(self, op, f) -> None:
        c = self.sys.cluster
        account = self.h.accounts[op.n % len(self.h.accounts)]
        key = epoch_key(self.prefix.rstrip(":"), account, 4)
        primary = c.primary_of(key)
        f["primary"], f["account"] = primary, account
        if op.kind == "failover":
            replica = c.replica_of(primary)
            c.cli(replica, "CLUSTER", "FAILOVER")
            f["promoted"] = replica
        else:
            c.parts[primary].stop(signal.SIGKILL)

            def back():
                c.start_node(primary)
                f["restarted"] = round(now_ms())
            self.later(op.args["down"], back)

    # --- the whole history

    def run(self) -> History:
        self.sys.begin(self.prefix)
        self.h.started_ms = now_ms()
        start = time.monotonic()
        self.h.event("begin", prefix=self.prefix, accounts=self.h.accounts)
        futures = []
        for op in self.plan.ops:
            delay = start + op.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if op.kind in ("kill9", "term", "stop", "flushall", "snapshot", "stale", "ledger", "worker_sqs", "edge_aws", "forget_schedules",
                           "failover", "kill_primary"):
                futures.append(self.pool.submit(self.fault, op))
            else:
                futures.append(self.pool.submit(self.do, op))
        for fut in futures:
            fut.result()
        self.heal()
        self.h.settled = self.settle()
        self.collect()
        self.sys.end()
        return self.h

    def heal(self) -> None:
        for t in self.timers:
            t.join()
        self.sys.edge_proxy.clear_rules()
        self.sys.worker_proxy.clear_rules()
        for i in range(hs.WORKERS):
            self.sys.send_signal(i, signal.SIGCONT)
            if i not in self.sys.workers:
                self.sys.start_worker(i)
        if self.sys.cluster:
            for port in self.sys.cluster.ports:
                if port not in self.sys.cluster.alive():
                    self.sys.cluster.start_node(port)
            self.sys.cluster.wait_ok()
        self.h.event("healed")
        # Far-off messages would wait a day and a half: their TTL is read, then they are canceled.
        far = [m for m in list(self.h.messages.values()) if m.send_at_ms and m.send_at_ms > now_ms() + 3600_000]
        for m in far:
            item = None
            for _ in range(50):  # until the worker has scheduled it (its item counted)
                item = self.sys.ddb.get_item(TableName=self.sys.aws.table, Key={"creatorId": {"S": m.account}, "messageId": {"S": m.id}},
                                             ConsistentRead=True).get("Item")
                if item and "countedGen" in item:
                    break
                time.sleep(0.1)
            self.h.event("far_item", id=m.id, item=item)
            for attempt in range(5):
                status, answer = self.call("DELETE", f"/{m.id}", m.account)
                self.h.event("cancel", op=None, id=m.id, account=m.account, status=status, t0=round(now_ms()), answer=answer, heal=True)
                if status == 200 or status == 409:
                    break
                time.sleep(0.5)
        for a, paused in self.held.items():
            if paused:
                for attempt in range(5):
                    t0 = now_ms()
                    status, answer = self.call("POST", "/account/resume", a)
                    self.h.event("resume", op=None, account=a, status=status, t0=round(t0), answer=answer, heal=True)
                    if status == 200:
                        self.held[a] = False
                        break
                    time.sleep(0.5)

    def settle(self) -> bool:
        """Until every message of the history's accounts is finished in the ledger and the
        schedule holds nothing of them, or SETTLE_TIMEOUT."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            waiting = [i for a in self.h.accounts for i in self.sys.items(a)
                       if not i["messageId"]["S"].startswith("#") and i["status"]["S"] in ("queued", "sending")]
            known = {i["messageId"]["S"] for a in self.h.accounts for i in self.sys.items(a)}
            unwritten = [m for m in self.h.messages.values() if m.id not in known and not self.campaign_canceled(m.campaign)]
            busy = [k for k in self.sys.keys(self.prefix) if any(k.endswith(s) for s in ("leases", "ready", "delayed")) or ":q:" in k]
            if not self.sys.queue_empty():
                busy.append("the send queue")  # a copy a killed worker held comes back after its visibility timeout
            if not waiting and not unwritten and not busy:
                time.sleep(1.5)  # late duplicates, if any, reach the gateway
                self.h.event("settled")
                return True
            time.sleep(1)
        self.h.event("not_settled", waiting=len(waiting), unwritten=len(unwritten), busy=busy, schedule=self.sys.schedule_state(self.prefix))
        return False

    def campaign_canceled(self, cid) -> bool:
        return cid is not None and any(e["status"] == 200 and e["id"] == cid for e in self.h.of("cancel_campaign"))

    def collect(self) -> None:
        final = self.h.final
        final["deliveries"] = {a: redacted(self.sys.gateway_records("deliveries", a)) for a in self.h.accounts}
        final["refused"] = {a: redacted(self.sys.gateway_records("refused", a)) for a in self.h.accounts}
        final["items"] = {a: self.sys.items(a) for a in self.h.accounts}
        views = {}
        for mid, m in self.h.messages.items():
            views[mid] = self.call("GET", f"/{mid}", m.account)
        final["views"] = views
        final["campaign_views"] = {cid: self.call("GET", f"/campaigns/{cid}", c["account"]) for cid, c in self.h.campaigns.items()}
        final["status"] = {a: self.call("GET", "/status", a) for a in self.h.accounts}
        final["slow_claims"] = self.sys.slow_claims(self.h.started_ms)
        failed = {}
        for a in self.h.accounts:
            pages, cursor = [], None
            while True:
                status, page = self.call("GET", "/failed?limit=100" + (f"&cursor={cursor}" if cursor else ""), a)
                pages.append((status, page))
                cursor = page.get("nextCursor") if status == 200 else None
                if not cursor:
                    break
            failed[a] = pages
        final["failed"] = failed
        time.sleep(max(0, (hs.WINDOW_MS + hs.MARGIN_MS) / 1000 + 0.5))  # idle accounts' state expires
        final["keys"] = self.sys.keys(self.prefix)
        final["collected_ms"] = round(now_ms())


def redacted(records: list) -> list:
    """The gateway's records without the token they carried (a saved history is a log:
    no secret in it): `authorization` says whether it was the workers' token."""
    for r in records:
        r["authorization"] = "Bearer <GATEWAY_TOKEN>" if r.get("authorization") == f"Bearer {stack.GATEWAY_TOKEN}" else "<another token>" if r.get("authorization") else None
    return records
