"""The README's run command: starts the whole system (Redis, the AWS emulator with the
queue, dead-letter queue and ledger, the stand-in gateway, one native worker, the edge
under `wrangler dev`), prints how to use it, and stops everything on Ctrl-C.

    python -m devstack.run [--real-limit] [--gateway http|onlyfansapi] [--edge-port 8787] ...
"""

import argparse
import signal
import threading

from devstack import stack
from devstack.mint_jwt import mint
from devstack.system import LocalSystem, Ports


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-limit", action="store_true", help="10 messages per 60 s per account (default: the fast demo limit, 10 per 2 s)")
    p.add_argument("--account", default="creator-1", help="account of the printed sample token")
    p.add_argument("--gateway", choices=["http", "onlyfansapi"], default="http",
                   help="the protocol the worker speaks: ours (default), or OnlyFansAPI.com's, to a local stand-in of the vendor")
    defaults = Ports()
    for name, port in vars(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}-port", type=int, default=port, dest=name)
    a = p.parse_args()
    ports = Ports(**{k: getattr(a, k) for k in vars(defaults)})
    ports.check()

    system = LocalSystem(ports, stack.ROOT / ".run", fast=not a.real_limit, dev_vars=stack.ROOT / ".dev.vars", worker_env_file=stack.ROOT / ".worker.env",
                         vendor=a.gateway == "onlyfansapi")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        system.start(say=lambda m: print(m, flush=True))
        s = system.edge_settings
        token = mint(a.account, s["JWT_SECRET"], 24 * 3600, s.get("JWT_USER_CLAIM") or "sub", s.get("JWT_ISSUER"), s.get("JWT_AUDIENCE"))
        print_usage(system, a.account, token, "10 per 60 s" if a.real_limit else "10 per 2 s (demo; --real-limit for 10 per 60 s)")
        try:
            stopping.wait()
        except KeyboardInterrupt:
            pass
    finally:
        print("\n==> stopping everything", flush=True)
        system.stop()


def print_usage(system: LocalSystem, account: str, token: str, limit: str) -> None:
    api, p = system.api, system.ports
    print(f"""
Ready. Per-account limit: {limit}.
  Console:        {api}/console/#token={token}
                  (the operators' page, signed in as {account!r}: the token stays in the
                  fragment, which the browser never sends, and then in that tab only)
  API:            {api}
  Gateway stub:   {system.gateway}/deliveries  (what was delivered{"; OnlyFansAPI.com's protocol" if system.vendor else ""})
  Worker health:  http://127.0.0.1:{p.worker_health}/readyz
  AWS emulator:   http://127.0.0.1:{p.aws}  (root key test/test)
  Redis:          redis://127.0.0.1:{p.redis}
  Logs:           .run/logs/
  Settings:       .dev.vars (edge), .worker.env (worker)

A token for account {account!r} (24 h; another account: scripts/mint-jwt.sh ACCOUNT):

export TOKEN={token}

curl -s {api}/health
curl -s -X POST {api}/send -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"recipientId": "fan-1", "content": "Hello"}}'
curl -s -X POST {api}/send -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"recipientIds": ["fan-1", "fan-2", "fan-3"], "content": "Hello all", "priority": 3}}'
curl -s {api}/status -H "Authorization: Bearer $TOKEN"
curl -s {api}/failed -H "Authorization: Bearer $TOKEN"
curl -s {api}/MESSAGE_ID -H "Authorization: Bearer $TOKEN"
curl -s -X POST {api}/MESSAGE_ID/retry -H "Authorization: Bearer $TOKEN"
curl -s {system.gateway}/deliveries

Ctrl-C stops everything.""", flush=True)


if __name__ == "__main__":
    main()
