"""The whole system on one machine, started the way the README's run command starts
it: Redis, the AWS emulator (provisioned), the stand-in gateway, one native worker and
the edge under `wrangler dev`. Used by `devstack.run` and by the end-to-end suite."""

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from devstack import provision as prov
from devstack import stack

# The fast demo limit: the same rule as 10 a minute, thirty times faster. Its margin
# covers delivery jitter, which does not shrink with the window: a debug-built worker
# starting on a loaded 2-core machine has delayed a delivery by ~230 ms.
FAST = {"RATE_LIMIT_MAX": "10", "RATE_LIMIT_WINDOW": "2s", "RATE_LIMIT_MARGIN": "250ms"}
REAL = {"RATE_LIMIT_MAX": "10", "RATE_LIMIT_WINDOW": "60s"}


@dataclass
class Ports:
    edge: int = 8787
    aws: int = 4566
    redis: int = 6379
    gateway: int = 9090
    worker_health: int = 8081

    @staticmethod
    def free() -> "Ports":
        return Ports(*(stack.free_port() for _ in range(5)))

    def check(self) -> None:
        for name, port in vars(self).items():
            if stack.port_taken(port):
                raise SystemExit(f"port {port} ({name.replace('_', ' ')}) is already in use: stop what holds it, or choose another port")


# The local stand-in vendor's API key (a local run's, never a real one), and its limit
# per key over all accounts (per the per-account limit's window: six accounts' worth),
# which the stand-in counts and the workers keep (GATEWAY_RATE_LIMIT_MAX).
VENDOR_KEY = "local-vendor-key"
VENDOR_KEY_LIMIT = 60


@dataclass
class LocalSystem:
    ports: Ports
    home: Path  # where settings, logs and Redis data go
    fast: bool = True
    dev_vars: Path | None = None  # the edge's settings file (default home/.dev.vars)
    worker_env_file: Path | None = None
    # The worker speaks OnlyFansAPI.com's protocol to the stub standing in for it
    # (`GATEWAY_KIND=onlyfansapi`), instead of our gateway's.
    vendor: bool = False
    parts: dict = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports.edge}/api/onlyfans/messaging"

    @property
    def limit(self) -> dict:
        """The per-account limit the workers keep: {"max", "window_ms"}."""
        settings = FAST if self.fast else REAL
        return {"max": int(settings["RATE_LIMIT_MAX"]), "window_ms": int(settings["RATE_LIMIT_WINDOW"].rstrip("s")) * 1000}

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    def start(self, say=print) -> None:
        logs = self.home / "logs"
        limit = FAST if self.fast else REAL
        say(f"==> Redis on 127.0.0.1:{self.ports.redis}")
        # The emulator starts empty every time, so Redis does too: a schedule kept from
        # an earlier run would name messages whose ledger items are gone (and the ledger
        # would hold nothing to rebuild it from).
        shutil.rmtree(self.home / "redis", ignore_errors=True)
        self.parts["redis"] = stack.start_redis(self.ports.redis, logs / "redis.log", self.home / "redis")
        say(f"==> AWS emulator on 127.0.0.1:{self.ports.aws}")
        self.parts["aws"] = stack.start_ministack(self.ports.aws, logs / "ministack.log")
        self.resources = prov.provision(f"http://127.0.0.1:{self.ports.aws}")
        say(f"==> gateway stub on 127.0.0.1:{self.ports.gateway}")
        key_window_ms = self.limit["window_ms"]
        protocol = ["--protocol", "onlyfansapi", "--api-key", VENDOR_KEY, "--key-limit", str(VENDOR_KEY_LIMIT), "--key-window", str(key_window_ms)]
        protocol = protocol if self.vendor else []
        self.parts["gateway"] = stack.start_gateway_stub(self.ports.gateway, logs / "gateway-stub.log", *protocol)

        self.worker_env_file = self.worker_env_file or self.home / ".worker.env"
        if not self.worker_env_file.exists():
            shutil.copy(stack.ROOT / "worker.env.example", self.worker_env_file)
        self.worker_settings = {
            **stack.read_vars(self.worker_env_file), **self.resources.worker_env(), **limit,
            "REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}",
            **({"GATEWAY_KIND": "onlyfansapi", "GATEWAY_URL": self.gateway, "GATEWAY_TOKEN": VENDOR_KEY,
                "GATEWAY_RATE_LIMIT_MAX": str(VENDOR_KEY_LIMIT), "GATEWAY_RATE_LIMIT_WINDOW": f"{key_window_ms}ms",
                **({"GATEWAY_RATE_LIMIT_MARGIN": limit["RATE_LIMIT_MARGIN"]} if "RATE_LIMIT_MARGIN" in limit else {})} if self.vendor else
               {"GATEWAY_KIND": "http", "GATEWAY_URL": f"{self.gateway}/accounts/{{accountId}}/messages/{{recipientId}}"}),
            "HEALTH_PORT": str(self.ports.worker_health),
        }
        stack.write_vars(self.worker_env_file, self.worker_settings, quote=False)
        self.start_worker(say)

        self.dev_vars = self.dev_vars or self.home / ".dev.vars"
        if not self.dev_vars.exists():
            shutil.copy(stack.ROOT / ".dev.vars.example", self.dev_vars)
        self.edge_settings = {**stack.read_vars(self.dev_vars), **self.resources.edge_vars(), **limit}
        stack.write_vars(self.dev_vars, self.edge_settings)
        say(f"==> edge (wrangler dev) on 127.0.0.1:{self.ports.edge}")
        self.parts["edge"] = stack.start_edge(self.ports.edge, self.dev_vars, logs / "edge.log", build=True, timeout=600)

    def start_worker(self, say=print) -> None:
        say(f"==> native worker (health on 127.0.0.1:{self.ports.worker_health})")
        self.parts["worker"] = stack.start_worker(self.worker_settings, self.home / "logs" / "worker.log", self.ports.worker_health)

    def stop_worker(self) -> int | None:
        worker = self.parts.pop("worker")
        worker.stop()
        return worker.proc.returncode

    def stop(self) -> None:
        for name in ("edge", "worker", "gateway", "aws", "redis"):
            if name in self.parts:
                self.parts.pop(name).stop()
