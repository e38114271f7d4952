"""The README's run command: starts the AWS emulator (provisioned) and the edge under
`wrangler dev`, prints how to call it, and stops everything on Ctrl-C.

    python -m devstack.run [--edge-port 8787] [--aws-port 4566]
"""

import argparse
import shutil
import signal
import sys
import threading

from devstack import provision as prov
from devstack import stack
from devstack.mint_jwt import mint

BASE = "/api/onlyfans/messaging"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edge-port", type=int, default=8787)
    p.add_argument("--aws-port", type=int, default=4566)
    p.add_argument("--account", default="creator-1", help="account of the printed sample token")
    a = p.parse_args()
    for name, port in (("edge (--edge-port)", a.edge_port), ("AWS emulator (--aws-port)", a.aws_port)):
        if stack.port_taken(port):
            sys.exit(f"port {port} for the {name} is already in use: stop what holds it or pick another port")

    logs = stack.ROOT / ".run" / "logs"
    dev_vars = stack.ROOT / ".dev.vars"
    if not dev_vars.exists():
        shutil.copy(stack.ROOT / ".dev.vars.example", dev_vars)
    parts = []
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        print(f"==> AWS emulator on 127.0.0.1:{a.aws_port} (log: {logs / 'ministack.log'})", flush=True)
        parts.append(stack.start_ministack(a.aws_port, logs / "ministack.log"))
        resources = prov.provision(f"http://127.0.0.1:{a.aws_port}")
        settings = {**stack.read_vars(dev_vars), **resources.edge_vars()}
        stack.write_vars(dev_vars, settings)
        print(f"==> edge (wrangler dev) on 127.0.0.1:{a.edge_port} (log: {logs / 'edge.log'})", flush=True)
        parts.append(stack.start_edge(a.edge_port, dev_vars, logs / "edge.log", build=True, timeout=600))
        token = mint(a.account, settings["JWT_SECRET"], 24 * 3600, settings.get("JWT_USER_CLAIM") or "sub",
                     settings.get("JWT_ISSUER"), settings.get("JWT_AUDIENCE"))
        print_usage(f"http://127.0.0.1:{a.edge_port}", f"http://127.0.0.1:{a.aws_port}", a.account, token)
        try:
            stopping.wait()
        except KeyboardInterrupt:
            pass
    finally:
        print("\n==> stopping", flush=True)
        for part in reversed(parts):
            part.stop()


def print_usage(edge: str, aws: str, account: str, token: str) -> None:
    api = edge + BASE
    print(f"""
Ready.
  API:           {api}
  AWS emulator:  {aws}  (root key test/test)
  Sample token for account {account!r} (24 h; more with scripts/mint-jwt.sh ACCOUNT):

export TOKEN={token}

curl -s {api}/health
curl -s -X POST {api}/send -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"recipientId": "fan-1", "content": "Hello"}}'
curl -s -X POST {api}/send -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"recipientIds": ["fan-1", "fan-2", "fan-3"], "content": "Hello all", "priority": 3}}'
curl -s {api}/status -H "Authorization: Bearer $TOKEN"
curl -s {api}/failed -H "Authorization: Bearer $TOKEN"
curl -s {api}/MESSAGE_ID -H "Authorization: Bearer $TOKEN"
curl -s -X POST {api}/MESSAGE_ID/retry -H "Authorization: Bearer $TOKEN"

Ctrl-C stops everything.""", flush=True)


if __name__ == "__main__":
    main()
