"""The checks: the system's promises held against a recorded history and what the system
said once it had settled. Each check returns violations, named by kind:

- `limit`: more than MAX arrivals of an account at the gateway (refused ones count:
  they reached it) in a rolling window;
- `paused`: an arrival while the account was paused (after the pause reached the worker:
  1.5 s, more while a fault slowed it), or during a 429's Retry-After (after the lead
  another worker may have taken a message in);
- `lost`, `stuck`: an accepted message with no item, or one still `queued` or `sending`
  once everything has settled; `unsettled`: the system did not settle;
- `canceled_and_delivered`, `sent_not_delivered`, `failed_but_delivered`: the ledger and
  the gateway disagree, or a cancel answered 200 for a message that was delivered;
- `duplicate`: a message delivered more often than its documented licences allow (an
  answer held past the worker's timeout; a kill -9, a SIGSTOP, a Redis loss or a
  failover while it was in flight);
- `api`: `GET /{id}`, `/campaigns/{id}`, `/status` or `/failed` disagreeing with the
  ledger's items counted by status, or a campaign cancel's answer counting as canceled
  a message that was then delivered;
- `keys`: a key left in Redis once settled (beyond the shard's own and the markers
  with their TTL); `ttl`: an item that could expire before its message is finished, or
  kept for another time than LEDGER_TTL_DAYS after it finished;
- `request`: what the gateway received (path, bearer token, content, media, metadata)
  differing from what was sent;
- `idle`: an account with a message ready to go and no fault (nor a ledger found slower than a take's lead by a worker), pause or 429 in the way
  that sent nothing for several spacings (a slot given to something that was not sent).
"""

import re
from dataclasses import dataclass
from datetime import datetime

from harness import max_in_window, ms
from histories import system as hs
from histories.run import History, Message, ambiguous

SPACING_MS = hs.WINDOW_MS / hs.MAX
LEAD_MS = 200  # CLAIM_LEAD
MAX_LEAD_MS = 1000  # the longest a message is taken ahead of its slot
PROPAGATION_MS = 1500  # a pause or resume from the edge's answer to the schedule, messages taken ahead included
RECOVERY_MS = 3000  # after a fault ends, until the system is back to normal
LOSSES = ("flushall", "failover", "stale", "kill_primary")  # faults after which the schedule is rebuilt
IDLE_MS = LEAD_MS + 4 * SPACING_MS + hs.MARGIN_MS  # the longest a ready account may go without a send
TTL_SLACK_S = 600
VISIBILITY_MS = hs.VISIBILITY_S * 1000  # the send queue's visibility timeout in the histories
INGEST_MS = 1500  # from the edge's answer until the message is in the schedule, at most
LICENSING_FAULTS = ("kill9", "stop", "flushall", "stale", "failover", "kill_primary")


@dataclass
class Violation:
    kind: str
    detail: str

    def __str__(self):
        return f"[{self.kind}] {self.detail}"


def plain(item: dict) -> dict:
    """A DynamoDB item as plain values."""
    out = {}
    for k, v in item.items():
        (t, x), = v.items()
        out[k] = int(x) if t == "N" else x
    return out


class Checker:
    def __init__(self, h: History):
        self.h = h
        self.final = h.final
        self.v: list[Violation] = []
        self.items = {a: {i["messageId"]: i for i in map(plain, items)} for a, items in self.final.get("items", {}).items()}
        self.arrivals = {}  # account -> [{t, id, recipient, status, delay, record}]
        for a in h.accounts:
            got = [{"t": ms(d["receivedAt"]), "id": d["messageId"], "recipient": d["recipientId"], "status": 202, "delay": d.get("delayMs", 0), "record": d}
                   for d in self.final.get("deliveries", {}).get(a, [])]
            got += [{"t": ms(r["receivedAt"]), "id": r["messageId"], "recipient": r["recipientId"], "status": r["status"], "delay": r.get("delayMs", 0),
                     "record": r} for r in self.final.get("refused", {}).get(a, [])]
            self.arrivals[a] = sorted(got, key=lambda x: x["t"])
        self.by_id = {}
        for a, got in self.arrivals.items():
            for x in got:
                self.by_id.setdefault(x["id"], []).append(x)
        self.faults = [e for e in h.of("fault") if not e.get("skipped")]
        self.impaired = self._impaired()
        # The ledger slower than a take's lead with no fault injected (the emulator on a
        # busy machine: CI, seeds 1838218566 and 1833763631): what a worker took meanwhile
        # was given back unsent, as the limit requires; the account may idle until the
        # ledger answers in time again.
        self.impaired += [(t - claim_ms - LEAD_MS, t + RECOVERY_MS) for t, claim_ms in self.final.get("slow_claims", [])]
        # What delays a control or an outcome on its way to the schedule: workers down or
        # stopped, SQS and the ledger failing, Redis not answering. A Redis that lost its
        # data delays nothing: what it held must be put back, holds and pauses included.
        self.delayed = self._impaired(exclude=("flushall", "failover"))

    def add(self, kind: str, detail: str) -> None:
        self.v.append(Violation(kind, detail))

    # --- time

    def _impaired(self, exclude=()) -> list:
        """When a fault (or its aftermath) may slow the system: [(start, end)] in ms."""
        out = []

        def recovered(f):  # when the schedule is back after a loss (rebuilt from the ledger)
            return max(f.get("end", f["t"]), f.get("restarted", f["t"])) + RECOVERY_MS + 2000
        losses = [(f["t"], recovered(f)) for f in self.faults if f["fault"] in LOSSES]
        for f in self.faults:
            k, a, t = f["fault"], f["args"], f["t"]
            if k in exclude:
                continue
            if k in ("kill9", "term"):
                end = f.get("restarted", self.h.events[-1]["t"]) + 1000
                if k == "kill9":
                    # What it had taken ahead holds its accounts' next slots until its leases
                    # expire and a worker's scan puts those messages back (seed 752570085).
                    end = max(end, t + hs.LEASE_MS + 1500)
                if a.get("slow_ledger"):  # the ledger's transactions slowed meanwhile (run.py)
                    end = max(end, t + (hs.SLOW_LEDGER_S + hs.SLOW_LEDGER_DELAY_S) * 1000 + RECOVERY_MS)
                if any(s <= t <= e for s, e in losses):
                    # Perhaps killed in the middle of a rebuild: its lock holds the shard
                    # until it expires, then another worker rebuilds (README, Redis Cluster).
                    end = max(end, t + hs.REBUILD_LOCK_MS + RECOVERY_MS)
            elif k == "stop":
                end = f.get("continued", t + a["secs"] * 1000) + hs.LEASE_MS + 500
            elif k in LOSSES:
                end = recovered(f)
            elif k in ("ledger", "worker_sqs", "edge_aws"):
                end = t + (a["secs"] + a.get("delay", 0)) * 1000 + RECOVERY_MS
            else:
                continue
            out.append((t, end))
        return out

    def allowance(self, start: float, base: float) -> float:
        """`start + base`, pushed on by every delay (`self.delayed`) that overlaps the span
        so far."""
        end = start + base
        changed = True
        while changed:
            changed = False
            for s, e in self.delayed:
                if s <= end and e >= start and e + base > end:
                    end, changed = e + base, True
        return end

    def ok_events(self, kind: str, account: str | None = None) -> list:
        return [e for e in self.h.of(kind) if e["status"] == 200 and (account is None or e["account"] == account)]

    def paused_spans(self, account: str, maybe: bool = False) -> list:
        """(pause answered, resume asked) of the account, in ms: when it surely was paused,
        or with `maybe`, when it may have been. A control answered 5xx or not at all may
        have taken effect (queued before its answer was lost): it starts no sure pause
        and ends no possible one, but ends a sure pause (a resume) and starts a possible
        one (a pause)."""
        controls = sorted((e for e in self.h.of("pause") + self.h.of("resume")
                           if e["account"] == account and (e["status"] == 200 or ambiguous(e["status"]))), key=lambda e: e["t0"])
        spans, since = [], None
        for e in controls:
            sure = e["status"] == 200
            if e["kind"] == "pause" and since is None and (sure or maybe):
                since = e["t"] if sure else e["t0"]
            elif e["kind"] == "resume" and since is not None and (sure or not maybe):
                spans.append((since, e["t0"]))
                since = None
        if since is not None:
            spans.append((since, float("inf")))
        return spans

    def rate_limited_spans(self, account: str) -> list:
        """(the 429's arrival, the end of its Retry-After) of the account, in ms."""
        spans = []
        for x in self.arrivals[account]:
            if x["status"] != 429:
                continue
            ra = str(x["record"].get("retryAfter", ""))
            if ra.isdigit():
                end = x["t"] + int(ra) * 1000
            elif ra:
                end = max(x["t"], datetime.strptime(ra, "%a, %d %b %Y %H:%M:%S GMT").timestamp() * 1000)
            else:
                end = x["t"] + 1000
            spans.append((x["t"], end))
        return spans

    # --- the checks

    def run(self) -> list:
        if not self.h.settled:
            last = self.h.of("not_settled")
            self.add("unsettled", f"not settled within the timeout: {last[-1] if last else ''}")
        for check in (self.limit, self.pauses, self.outcomes, self.duplicates, self.api, self.keys, self.ttl, self.requests, self.idle):
            check()
        return self.v

    def limit(self) -> None:
        for a, got in self.arrivals.items():
            times = [x["t"] for x in got]
            worst = max_in_window(times, hs.WINDOW_MS)
            if worst > hs.MAX:
                for i in range(len(times) - hs.MAX):
                    if times[i + hs.MAX] - times[i] < hs.WINDOW_MS:
                        at = self.rel(times[i])
                        self.add("limit", f"{a}: {worst} arrivals in a {hs.WINDOW_MS} ms window, the first at {at}")
                        break

    def rel(self, t: float) -> str:
        return f"t={(t - self.h.started_ms) / 1000:.2f}s"

    def pauses(self) -> None:
        for a, got in self.arrivals.items():
            for since, until in self.paused_spans(a):
                start = self.allowance(since, PROPAGATION_MS)
                inside = [x for x in got if start < x["t"] < until]
                if inside:
                    self.add("paused", f"{a}: {len(inside)} arrivals while paused ({self.rel(since)} to {self.rel(until)}), the first at "
                                       f"{self.rel(inside[0]['t'])} ({inside[0]['id']})")
            for t, end in self.rate_limited_spans(a):
                start = self.allowance(t, MAX_LEAD_MS + 100)
                inside = [x for x in got if start < x["t"] < end - 100]
                if inside:
                    self.add("paused", f"{a}: {len(inside)} arrivals during a 429's Retry-After ({self.rel(t)} to {self.rel(end)}), the first "
                                       f"at {self.rel(inside[0]['t'])} ({inside[0]['id']})")

    def canceled_campaigns(self) -> set:
        return {e["id"] for e in self.ok_events("cancel_campaign")}

    def campaign_canceled(self, cid) -> bool:
        return cid is not None and any(e["id"] == cid for e in self.ok_events("cancel_campaign"))

    def campaign_maybe_canceled(self, cid) -> bool:
        """A cancel answered 5xx or not at all may have taken effect (its ledger mark made
        before the answer was lost)."""
        return any(e["id"] == cid and (e["status"] is None or e["status"] >= 500) for e in self.h.of("cancel_campaign"))

    def delivered(self, mid: str) -> list:
        return [x for x in self.by_id.get(mid, []) if 200 <= x["status"] < 300]

    def outcomes(self) -> None:
        canceled_ok = {e["id"] for e in self.ok_events("cancel")}
        known = set()
        for mid, m in self.h.messages.items():
            known.add(mid)
            item = self.items.get(m.account, {}).get(mid)
            sent = self.delivered(mid)
            if item is None:
                if not (self.campaign_canceled(m.campaign) and not sent):
                    self.add("lost", f"{mid} ({m.recipient}, op #{m.op}): accepted, no ledger item" + (f", delivered {len(sent)}x" if sent else ""))
                continue
            status = item["status"]
            if status in ("queued", "sending"):
                self.add("stuck", f"{mid} ({m.recipient}, op #{m.op}): still {status} after settling")
            elif status == "sent" and not sent:
                self.add("sent_not_delivered", f"{mid} ({m.recipient}): sent in the ledger, never delivered")
            elif status == "canceled" and sent:
                self.add("canceled_and_delivered", f"{mid} ({m.recipient}): canceled in the ledger, delivered at {self.rel(sent[0]['t'])}")
            elif status == "failed" and [x for x in sent if x["delay"] < hs.GATEWAY_TIMEOUT_MS]:
                self.add("failed_but_delivered", f"{mid} ({m.recipient}): failed in the ledger, delivered at {self.rel(sent[0]['t'])}")
            if mid in canceled_ok and sent:
                self.add("canceled_and_delivered", f"{mid} ({m.recipient}): its cancel answered 200, delivered at {self.rel(sent[0]['t'])}")
        # Sends answered 5xx: whatever became of them must be whole (delivered and sent, or nothing).
        for m in self.h.unknown:
            items = [i for i in self.items.get(m.account, {}).values() if i.get("recipientId") == m.recipient]
            got = [x for x in self.arrivals[m.account] if x["recipient"] == m.recipient and 200 <= x["status"] < 300]
            known.update(i["messageId"] for i in items)
            if not items and got:
                self.add("lost", f"{m.recipient} (op #{m.op}, answered 5xx): delivered, no ledger item")
            for i in items:
                if i["status"] in ("queued", "sending"):
                    self.add("stuck", f"{i['messageId']} ({m.recipient}, op #{m.op}, answered 5xx): still {i['status']}")
        for a, items in self.items.items():
            for mid, i in items.items():
                if not mid.startswith("#") and mid not in known:
                    self.add("lost", f"{mid} ({i.get('recipientId')}): an item the history does not know")

    def licences(self, m: Message) -> int:
        seen = self.by_id.get(m.id, [])
        hung = sum(1 for x in seen if 200 <= x["status"] < 300 and x["delay"] >= hs.GATEWAY_TIMEOUT_MS)
        faults = 0
        for f in self.faults:
            if f["fault"] in LICENSING_FAULTS and any(f["t"] - hs.GATEWAY_TIMEOUT_MS - 600 <= x["t"] <= f["t"] + MAX_LEAD_MS + 100 for x in seen):
                faults += 1
        return hung + faults

    def duplicates(self) -> None:
        for mid, m in self.h.messages.items():
            sent = self.delivered(mid)
            extra = len(sent) - 1
            if extra > 0 and extra > self.licences(m):
                times = ", ".join(self.rel(x["t"]) for x in sent)
                self.add("duplicate", f"{mid} ({m.recipient}): delivered {len(sent)}x ({times}), licensed {self.licences(m)}")

    def api(self) -> None:
        for mid, (status, view) in self.final.get("views", {}).items():
            m = self.h.messages[mid]
            item = self.items.get(m.account, {}).get(mid)
            want = item["status"] if item else ("canceled" if self.campaign_canceled(m.campaign) else None)
            got = view.get("status") if status == 200 else f"HTTP {status}"
            if want and got != want:
                self.add("api", f"GET /{mid}: {got}, the ledger says {want}")
        for cid, (status, view) in self.final.get("campaign_views", {}).items():
            c = self.h.campaigns[cid]
            items = [self.items.get(c["account"], {}).get(mid) for mid in c["ids"]]
            count = {s: sum(1 for i in items if i and i["status"] == s) for s in ("sent", "failed", "canceled")}
            count["queued"] = sum(1 for i in items if i and i["status"] in ("queued", "sending"))
            unwritten = sum(1 for i in items if i is None)
            canceled = {**count, "canceled": count["canceled"] + unwritten}
            waiting = {**count, "queued": count["queued"] + unwritten}
            # (status, counts) the view may show: canceled, completed, or either when a
            # cancel's answer was lost.
            if self.campaign_canceled(cid):
                allowed = [("canceled", canceled)]
            elif self.campaign_maybe_canceled(cid):
                allowed = [("canceled", canceled), ("completed", waiting)]
            else:
                allowed = [("completed", waiting)]
            if status != 200:
                self.add("api", f"GET /campaigns/{cid}: HTTP {status}")
                continue
            shown = {k: view[k] for k in count}
            if not any(view["status"] == w and shown == c for w, c in allowed):
                want, counts = next(((w, c) for w, c in allowed if w == view["status"]), allowed[0])
                if shown != counts:
                    self.add("api", f"GET /campaigns/{cid}: {shown}, its items count {counts}")
                if view["status"] != want:
                    self.add("api", f"GET /campaigns/{cid}: status {view['status']}, expected {want}")
            for e in self.ok_events("cancel_campaign"):
                if e["id"] == cid and isinstance(e["answer"], dict) and count["sent"] > c["total"] - e["answer"].get("canceled", 0):
                    self.add("api", f"DELETE /campaigns/{cid} answered {e['answer'].get('canceled')} canceled at {self.rel(e['t'])}, "
                                    f"then {count['sent']} of {c['total']} were sent")
        for a, (status, view) in self.final.get("status", {}).items():
            items = [i for k, i in self.items.get(a, {}).items() if not k.startswith("#")]
            want = {"backlog": 0, "sent": sum(1 for i in items if i["status"] == "sent"), "failed": sum(1 for i in items if i["status"] == "failed"),
                    "paused": False}
            if status != 200:
                self.add("api", f"GET /status of {a}: HTTP {status}")
                continue
            shown = {k: view["account"][k] for k in want}
            if shown != want:
                self.add("api", f"GET /status of {a}: {shown}, its items say {want}")
        for a, pages in self.final.get("failed", {}).items():
            listed = [m["id"] for status, page in pages if status == 200 for m in page["failedMessages"]]
            want = sorted(k for k, i in self.items.get(a, {}).items() if not k.startswith("#") and i["status"] == "failed")
            if sorted(listed) != want:
                self.add("api", f"GET /failed of {a}: lists {len(listed)} ({sorted(set(listed) ^ set(want))[:3]} differ), {len(want)} failed in the ledger")
            totals = [page.get("total") for status, page in pages if status == 200]
            if totals and totals[0] != len(want):
                self.add("api", f"GET /failed of {a}: total {totals[0]}, {len(want)} failed in the ledger")

    def keys(self) -> None:
        allowed = re.compile(r"(epoch|shards|lost_at|lost_lead)$")
        for k, ttl in self.final.get("keys", {}).items():
            if ttl == -2:
                continue  # expired between the scan that listed it and the read of its TTL
            rest = k.split(self.h.prefix, 1)[-1].lstrip("0123456789}:")
            if allowed.search(k) and ":" not in rest.rstrip(":"):
                continue
            if rest.startswith("took:") and 0 <= ttl <= 10_000:  # PTTL answers 0 in its last millisecond
                continue
            if rest.startswith("seen:") and ttl >= 0 and any(rest == f"seen:{cid}" for cid in self.h.campaigns if self.campaign_maybe_canceled(cid)
                                                             or self.campaign_canceled(cid)):
                continue  # a canceled campaign's marker, until its TTL
            if rest.startswith("st:") and 0 <= ttl <= hs.WINDOW_MS + hs.MARGIN_MS + 1000:
                continue
            self.add("keys", f"{k} left in Redis (ttl {ttl} ms)")

    def ttl(self) -> None:
        day = 86400
        for a, items in self.items.items():
            for mid, i in items.items():
                if mid.startswith("#") or i["status"] not in ("sent", "failed", "canceled"):
                    continue
                finished = i.get("sentAt") or i.get("failedAt") or i.get("canceledAt")
                if not finished or "ttl" not in i:
                    continue
                want = ms(finished) / 1000 + hs.LEDGER_TTL_DAYS * day
                if abs(i["ttl"] - want) > TTL_SLACK_S:
                    self.add("ttl", f"{mid}: ttl {(i['ttl'] - ms(finished) / 1000) / day:.2f} days after it finished, LEDGER_TTL_DAYS={hs.LEDGER_TTL_DAYS}")
        for e in self.h.of("far_item"):
            m = self.h.messages[e["id"]]
            item = plain(e["item"]) if e["item"] else None
            # Only while it waits (a cancel in the history may have ended it already).
            if item and item["status"] in ("queued", "sending") and "ttl" in item and item["ttl"] < m.send_at_ms / 1000:
                self.add("ttl", f"{m.id}: expires {(m.send_at_ms / 1000 - item['ttl']) / 3600:.1f} h before its sendAt")

    def requests(self) -> None:
        by_recipient = {m.recipient: m for m in list(self.h.messages.values()) + self.h.unknown}
        for a, got in self.arrivals.items():
            for x in got:
                m = by_recipient.get(x["recipient"])
                r = x["record"]
                if m is None:
                    self.add("request", f"{x['id']}: the gateway received a message for {x['recipient']}, which the history never sent")
                    continue
                want_path = f"/accounts/{encode(m.account)}/messages/{encode(m.recipient)}"
                body = r.get("body") or {}
                problems = []
                if r.get("path") != want_path:
                    problems.append(f"path {r.get('path')}")
                if r.get("authorization") != "Bearer <GATEWAY_TOKEN>":  # as run.py records it
                    problems.append(f"authorization {r.get('authorization')!r}")
                if body.get("accountId") != m.account or body.get("recipientId") != m.recipient:
                    problems.append("account or recipient")
                if body.get("content") != m.content:
                    problems.append(f"content {body.get('content')!r}")
                if (body.get("mediaUrls") or []) != m.media:
                    problems.append(f"mediaUrls {body.get('mediaUrls')}")
                if (body.get("metadata") or {}) != m.metadata:
                    problems.append(f"metadata {body.get('metadata')}")
                if m.id and body.get("messageId") != m.id:
                    problems.append(f"messageId {body.get('messageId')}")
                if problems:
                    self.add("request", f"{x['id']} ({m.recipient}): the gateway received " + "; ".join(problems))

    def idle(self) -> None:
        """Spans during which an account had a message ready (accepted, due, not canceled,
        not yet sent, sent at its first attempt) and nothing in its way, yet sent nothing
        for longer than IDLE_MS."""
        # The first cancel that succeeded counts (the same id may be canceled again).
        cancels, campaign_cancels = {}, {}
        for e in self.ok_events("cancel"):
            cancels[e["id"]] = min(cancels.get(e["id"], e["t0"]), e["t0"])
        for e in self.ok_events("cancel_campaign"):
            campaign_cancels[e["id"]] = min(campaign_cancels.get(e["id"], e["t"]), e["t"])
        killed = [f["t"] for f in self.faults if f["fault"] == "kill9"]
        for a, got in self.arrivals.items():
            ready = []
            for m in self.h.messages.values():
                if m.account != a or m.behaviour != "ok":
                    continue
                seen = self.by_id.get(m.id, [])
                if len(seen) != 1 or seen[0]["status"] >= 300 or seen[0]["delay"]:
                    ends = [cancels.get(m.id), campaign_cancels.get(m.campaign)]
                    if seen or not any(ends):
                        continue
                    end = min(e for e in ends if e)
                else:
                    end = seen[0]["t"]
                    if m.id in cancels or m.campaign in campaign_cancels:
                        end = min(x for x in (end, cancels.get(m.id), campaign_cancels.get(m.campaign)) if x)
                start = max(m.accepted_ms, m.send_at_ms or 0) + 1000
                if any(m.accepted_ms - INGEST_MS <= k <= m.accepted_ms + INGEST_MS for k in killed):
                    # Perhaps received by the killed worker and not yet scheduled: SQS hands
                    # it over again after its visibility timeout.
                    start = m.accepted_ms + VISIBILITY_MS + 1000
                if start < end:
                    ready.append((start, end))
            blocked = list(self.impaired)
            blocked += [(s, e + 1000) for s, e in self.paused_spans(a, maybe=True)]
            blocked += [(s - 100, e + 1000) for s, e in self.rate_limited_spans(a)]
            for s, e in subtract(union(ready), union(blocked)):
                inner = [x["t"] for x in got if s < x["t"] < e]
                edges = [s] + inner + [e]
                for x, y in zip(edges, edges[1:]):
                    if y - x > IDLE_MS:
                        self.add("idle", f"{a}: nothing sent from {self.rel(x)} to {self.rel(y)} ({y - x:.0f} ms) with a message ready")


def union(spans: list) -> list:
    out = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def subtract(spans: list, holes: list) -> list:
    out = []
    for s, e in spans:
        cur = s
        for hs_, he in holes:
            if he <= cur or hs_ >= e:
                continue
            if hs_ > cur:
                out.append((cur, hs_))
            cur = max(cur, he)
        if cur < e:
            out.append((cur, e))
    return out


def encode(s: str) -> str:
    """Percent-encodes a path segment as the worker does."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-._~") else "".join(f"%{b:02X}" for b in c.encode()) for c in s)


def check(h: History) -> list:
    return Checker(h).run()
