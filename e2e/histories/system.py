"""The real parts a history runs against, started once and shared by the histories of a
run (each history has its own accounts and its own Redis key prefix, and histories run
one after another): the AWS emulator, a fault proxy in front of it for the edge and
another for the workers, Redis (persistent, so that it can restart from an older
snapshot) or a Redis Cluster, the gateway stub, the edge under `wrangler dev`, and the
history's two worker processes, which the faults kill, stop and restart."""

import os
import re
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import requests

from devstack import provision as prov
from devstack import stack
from devstack.cluster import Cluster
from devstack.faultproxy import FaultProxy
from harness import LOGS, abandon_waiting, edge_settings, plain, start_edge

# The compressed limit of every history: 10 per 2 s, as the worker suite.
MAX = 10
WINDOW_MS = 2000
MARGIN_MS = 100
# The worker settings the checks rely on (the lease, the timeout, the retries).
GATEWAY_TIMEOUT_MS = 2000
LEASE_MS = 3000
MAX_ATTEMPTS = 3
LEDGER_TTL_DAYS = 1
WORKERS = 2
VISIBILITY_S = 10
# A rebuild's lock (worker-native/src/lua/recover.lua `LOCK_MS`): a worker killed in the
# middle of a rebuild holds its shard's accounts back this long at most.
REBUILD_LOCK_MS = 5000
# A worker stopped while the ledger is slow: its transactions take this long more, for
# this long (the outcomes it records on its way out wait for them).
SLOW_LEDGER_DELAY_S = 2.5
SLOW_LEDGER_S = 5


class HistorySystem:
    def __init__(self, cluster: bool = False, home: Path | None = None):
        # A folder of its own: a single-Redis system and a cluster one may run side by side.
        home = home or LOGS / ("histories-cluster" if cluster else "histories")
        self.home = home
        self.cluster_mode = cluster
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        self.parts = []
        self.redis = self.cluster = None
        try:
            self._start(cluster, home)
        except BaseException:
            # Nothing of a system that failed to start is left running.
            for p in reversed(self.parts):
                p.stop()
            if self.redis:
                self.redis.stop()
            raise

    def _start(self, cluster: bool, home: Path) -> None:
        aws_port = stack.free_port()
        self.parts.append(stack.start_ministack(aws_port, home / "ministack.log"))
        self.aws = prov.provision(f"http://127.0.0.1:{aws_port}", prefix="hs")
        self.ddb = prov.client("dynamodb", self.aws.endpoint)
        self.sqs = prov.client("sqs", self.aws.endpoint)
        # A message a killed worker had received comes back after the queue's visibility
        # timeout: 10 s here (60 s in the template), so that histories settle sooner.
        self.sqs.set_queue_attributes(QueueUrl=self.aws.queue_url, Attributes={"VisibilityTimeout": str(VISIBILITY_S)})
        self.edge_proxy = FaultProxy(self.aws.endpoint)
        self.edge_proxy.record("AmazonSQS.SendMessage")  # the queue bodies, for SQS duplicates
        self.worker_proxy = FaultProxy(self.aws.endpoint)
        gw_port = stack.free_port()
        self.parts.append(stack.start_gateway_stub(gw_port, home / "gateway-stub.log"))
        self.gateway = f"http://127.0.0.1:{gw_port}"
        self.redis_port = stack.free_port()
        self.redis_dir = home / "redis"
        if cluster:
            self.cluster = Cluster(home / "cluster")
        else:
            self.redis = stack.start_redis(self.redis_port, home / "redis.log", self.redis_dir)
        part, self.edge = start_edge(f"edge-{home.name}", edge_settings(
            self.aws, AWS_ENDPOINT_URL=self.edge_proxy.url, API_CALL_LIMITS="false", RATE_LIMIT_MAX=str(MAX),
            RATE_LIMIT_WINDOW=f"{WINDOW_MS}ms", LEDGER_TTL_DAYS=str(LEDGER_TTL_DAYS)))
        self.parts.append(part)
        self.workers = {}  # index -> Part (absent while down)
        self.prefix = None

    # --- workers

    def worker_env(self, prefix: str) -> dict:
        env = {
            **stack.worker_settings(self.aws.worker_env(), self.redis_port, self.gateway, prefix.rstrip(":")),
            "AWS_ENDPOINT_URL": self.worker_proxy.url,
            "RATE_LIMIT_MAX": str(MAX), "RATE_LIMIT_WINDOW": f"{WINDOW_MS}ms", "RATE_LIMIT_MARGIN": f"{MARGIN_MS}ms",
            "GATEWAY_TIMEOUT": f"{GATEWAY_TIMEOUT_MS}ms", "LEASE_TIMEOUT": f"{LEASE_MS}ms", "MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "RETRY_BASE_DELAY": "100ms", "RETRY_MAX_DELAY": "400ms", "SHUTDOWN_GRACE": "3s", "SQS_WAIT_SECONDS": "1",
            "METRICS_ENABLED": "false", "LEDGER_TTL_DAYS": str(LEDGER_TTL_DAYS),
            # Few deliveries in flight, so that backpressure (outcomes waiting for a slow
            # ledger) is met, at shutdown too.
            "MAX_IN_FLIGHT": "8",
        }
        if self.cluster:
            env.update(REDIS_URL=self.cluster.urls, REDIS_CLUSTER="true", SCHEDULE_SHARDS="4", REDIS_WAIT_REPLICAS="1")
        return env

    def slow_claims(self, since_ms: float) -> list:
        """When a worker found the ledger slower than a take's lead (its warning "ledger
        claim slower than the take's lead", at that time, with `claim_ms`): [(t, claim_ms)]
        since `since_ms`. Nothing is sent meanwhile, by design (a late claim is given back
        unsent): the ledger was slow, as under a fault, though none was injected (a busy
        machine's emulator)."""
        out = []
        for log in self.home.glob(f"worker-{self.prefix.rstrip(':')}-*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if "ledger claim slower than the take's lead" not in line:
                    continue
                line = plain(line)
                found = re.search(r"claim_ms=(\d+)", line)
                try:
                    t = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp() * 1000
                except ValueError:
                    continue
                if t >= since_ms and found:
                    out.append((t, int(found.group(1))))
        return sorted(out)

    def start_worker(self, i: int) -> None:
        log = self.home / f"worker-{self.prefix.rstrip(':')}-{i}.log"
        self.workers[i] = stack.start_worker(self.worker_env(self.prefix), log, stack.free_port())

    def begin(self, prefix: str) -> None:
        """A new history: its prefix, clean proxies and gateway rules, an empty queue, workers."""
        self.prefix = prefix
        self.edge_proxy.clear()
        self.worker_proxy.clear()
        requests.delete(self.gateway + "/_control/failures", timeout=10).raise_for_status()
        self.sqs.purge_queue(QueueUrl=self.aws.queue_url)
        abandon_waiting(self.ddb, self.aws.table)  # an earlier history's leftovers are not this one's
        for i in range(WORKERS):
            self.start_worker(i)

    def end(self) -> None:
        for i in list(self.workers):
            self.send_signal(i, signal.SIGCONT)
            self.workers.pop(i).stop()

    def send_signal(self, i: int, sig) -> None:
        """Signals worker `i`'s process group, if it runs."""
        part = self.workers.get(i)
        if part:
            self.signal_part(part, sig)

    @staticmethod
    def signal_part(part, sig) -> None:
        try:
            os.killpg(part.proc.pid, sig)
        except ProcessLookupError:
            pass

    # --- Redis

    def redis_cli(self, *args: str, port: int | None = None) -> str:
        return subprocess.run(["redis-cli", "-p", str(port or self.redis_port), *args], capture_output=True, text=True, timeout=15).stdout

    def primaries(self) -> list[int]:
        return self.cluster.primaries() if self.cluster else [self.redis_port]

    def flushall(self) -> None:
        for p in self.primaries():
            self.redis_cli("FLUSHALL", port=p)

    def snapshot(self) -> None:
        """Saves Redis's data as it is now (an RDB file beside the live one)."""
        before = self.redis_cli("LASTSAVE").strip()
        self.redis_cli("BGSAVE")
        deadline = time.monotonic() + 10
        while self.redis_cli("LASTSAVE").strip() == before and time.monotonic() < deadline:
            time.sleep(0.02)
        shutil.copy(self.redis_dir / "dump.rdb", self.redis_dir / "snapshot.rdb")

    def restart_from_snapshot(self) -> bool:
        """Redis killed and started again from the last snapshot (what it wrote since is
        lost, its epoch survives); False without a snapshot."""
        snap = self.redis_dir / "snapshot.rdb"
        if not snap.exists():
            return False
        self.redis.stop(signal.SIGKILL)
        shutil.rmtree(self.redis_dir / "appendonlydir", ignore_errors=True)
        shutil.copy(snap, self.redis_dir / "dump.rdb")
        self.redis = stack.start_redis(self.redis_port, self.home / "redis.log", self.redis_dir, load_rdb=True)
        return True

    def schedule_state(self, prefix: str) -> dict:
        """What the schedule holds under `prefix` that decides when an account sends (its
        `ready`, `leases` and `delayed` sets with their scores, each account's limit state)
        and Redis's clock: kept when a history does not settle, to read why."""
        out = {}
        for port in self.primaries():
            out[f"time@{port}"] = self.redis_cli("TIME", port=port).split()
            for k in self.scan(prefix, port):
                if any(k.endswith(s) for s in ("ready", "leases", "delayed")):
                    out[k] = self.redis_cli("ZRANGE", k, "0", "-1", "WITHSCORES", port=port).split("\n")
                elif ":st:" in k:
                    out[k] = self.redis_cli("HGETALL", k, port=port).split()
        return {k: v for k, v in out.items() if v and v != [""]}

    def keys(self, prefix: str) -> dict:
        """Every key under `prefix`, with its TTL in ms (-1: none)."""
        return {k: int(self.redis_cli("PTTL", k, port=port).strip() or -1) for port in self.primaries() for k in self.scan(prefix, port)}

    def scan(self, prefix: str, port: int) -> list[str]:
        """The keys under `prefix` on the primary at `port`."""
        out, cursor = [], "0"
        while True:
            lines = self.redis_cli("SCAN", cursor, "MATCH", f"*{prefix}*", "COUNT", "1000", port=port).split()
            cursor, found = lines[0], lines[1:]
            out.extend(found)
            if cursor == "0":
                return out

    def queue_empty(self) -> bool:
        a = self.sqs.get_queue_attributes(QueueUrl=self.aws.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return sum(int(v) for v in a["Attributes"].values()) == 0

    # --- the gateway

    def rule(self, **rule) -> None:
        requests.post(self.gateway + "/_control/failures", json=rule, timeout=10).raise_for_status()

    def gateway_records(self, path: str, account: str) -> list:
        return requests.get(f"{self.gateway}/{path}", params={"account": account}, timeout=30).json()

    # --- the ledger (the emulator's root key: what is stored, not what the API says)

    def items(self, account: str) -> list:
        items, start = [], None
        while True:
            kw = {"ExclusiveStartKey": start} if start else {}
            r = self.ddb.query(TableName=self.aws.table, KeyConditionExpression="creatorId = :c",
                               ExpressionAttributeValues={":c": {"S": account}}, ConsistentRead=True, **kw)
            items += r["Items"]
            start = r.get("LastEvaluatedKey")
            if not start:
                return items

    def forget_schedules(self) -> int:
        """Deletes the ledger's records of the schedules that have run (a table restored
        from a backup made before the schedule first ran); returns how many."""
        r = self.ddb.query(TableName=self.aws.table, KeyConditionExpression="creatorId = :c", ExpressionAttributeValues={":c": {"S": "#schedules"}})
        for item in r["Items"]:
            self.ddb.delete_item(TableName=self.aws.table, Key={"creatorId": item["creatorId"], "messageId": item["messageId"]})
        return len(r["Items"])

    def stop(self) -> None:
        self.end()
        for p in reversed(self.parts):
            p.stop()
        if self.redis:
            self.redis.stop()
        if self.cluster:
            self.cluster.stop()
        self.edge_proxy.stop()
        self.worker_proxy.stop()
