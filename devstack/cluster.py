"""A local Redis Cluster: 3 primaries and 3 replicas of Debian's `redis-server` on free
loopback ports, for the schedule tests, the worker's end-to-end tests and the
benchmark. `python -m devstack.cluster start DIR` starts one and prints its node URLs
(comma-separated, as REDIS_URL takes them with REDIS_CLUSTER=true); `stop DIR` stops
it by the PIDs it wrote there."""

import subprocess
import sys
import time
from pathlib import Path

from devstack import stack


def bus_free_port(taken: list[int]) -> int:
    """A free port whose cluster bus port (10,000 above) is free too: at most 55,535."""
    while True:
        port = stack.free_port()
        if port <= 55535 and port not in taken and not stack.port_taken(port + 10000):
            return port


class Cluster:
    """Six nodes, each a process group of its own (so a test can kill one)."""

    def __init__(self, directory: Path, nodes: int = 6):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = []
        while len(self.ports) < nodes:
            self.ports.append(bus_free_port(self.ports))
        self.parts = {}
        for port in self.ports:
            self.start_node(port)
        hosts = [f"127.0.0.1:{p}" for p in self.ports]
        made = subprocess.run(["redis-cli", "--cluster", "create", *hosts, "--cluster-replicas", "1", "--cluster-yes"],
                              capture_output=True, text=True, timeout=60)
        if made.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout[-2000:]} {made.stderr[-2000:]}")
        self.wait_ok()

    def start_node(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(node_dir), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
               "--cluster-node-timeout", "2000", "--enable-debug-command", "local"]
        part = stack.Part(f"redis-{port}", cmd, self.dir / f"redis-{port}.log")
        deadline = time.monotonic() + 10
        while not stack.port_taken(port):
            if part.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {port} did not start; see {part.log}")
            time.sleep(0.05)
        self.parts[port] = part
        (self.dir / f"{port}.pid").write_text(str(part.proc.pid))

    @property
    def urls(self) -> str:
        return ",".join(f"redis://127.0.0.1:{p}" for p in self.ports)

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True, text=True, timeout=10).stdout

    def alive(self) -> list[int]:
        return [p for p, part in self.parts.items() if part.proc.poll() is None]

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says cluster_state:ok and agrees on 3 primaries serving all slots."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO") for p in self.alive()):
                    if all(len(self.primaries(p)) == 3 for p in self.alive()):
                        return
            except subprocess.SubprocessError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout:.0f}s; see {self.dir}")

    def primaries(self, via: int | None = None) -> list[int]:
        """Ports of the primaries serving slots, as `via` (a live node) sees them."""
        out = self.cli(via or self.alive()[0], "CLUSTER", "NODES")
        ports = []
        for line in out.splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
                ports.append(int(fields[1].split(":")[1].split("@")[0]))
        return sorted(ports)

    def primary_of(self, key: str) -> int:
        """The port of the primary that serves `key`'s slot now."""
        via = self.alive()[0]
        slot = int(self.cli(via, "CLUSTER", "KEYSLOT", key).strip())
        for line in self.cli(via, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for served in fields[8:]:
                lo, _, hi = served.partition("-")
                if not served.startswith("[") and int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no live primary serves slot {slot} ({key})")

    def replica_of(self, primary: int, timeout: float = 15) -> int:
        """A live replica of `primary` (after a failover, the old primary may take a moment to report as one)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.cli(primary, "CLUSTER", "NODES")
            me = next(line.split()[0] for line in out.splitlines() if "myself" in line.split()[2])
            for line in out.splitlines():
                fields = line.split()
                if "slave" in fields[2] and fields[3] == me and "fail" not in fields[2] and "disconnected" not in fields[7:8]:
                    return int(fields[1].split(":")[1].split("@")[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no live replica of {primary}")
            time.sleep(0.1)

    def stop(self) -> None:
        for part in self.parts.values():
            part.stop(grace=5)


def stop_dir(directory: Path) -> None:
    import os
    import signal
    for pid_file in directory.glob("*.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink()


if __name__ == "__main__":
    command, directory = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        print(Cluster(directory).urls)
    elif command == "stop":
        stop_dir(directory)
    else:
        sys.exit(f"usage: python -m devstack.cluster start|stop DIR (not {command})")
