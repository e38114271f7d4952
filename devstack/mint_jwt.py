"""Mints a dev JWT (HS256) for an account, signed with JWT_SECRET from .dev.vars.

    python -m devstack.mint_jwt creator-1 [--ttl 3600] [--vars .dev.vars]
"""

import argparse
import sys
import time
from pathlib import Path

import jwt

from devstack.stack import ROOT, read_vars


def mint(account: str, secret: str, ttl: int, claim: str = "sub", issuer: str | None = None, audience: str | None = None) -> str:
    now = int(time.time())
    claims = {claim: account, "iat": now, "exp": now + ttl}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("account", help="the account (creator) id the token acts for")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires (default 3600)")
    p.add_argument("--vars", type=Path, default=ROOT / ".dev.vars", help="settings file with JWT_SECRET (default .dev.vars)")
    a = p.parse_args()
    if not a.vars.exists():
        sys.exit(f"{a.vars} not found: run scripts/run.sh once, or copy .dev.vars.example to .dev.vars")
    settings = read_vars(a.vars)
    secret = settings.get("JWT_SECRET")
    if not secret:
        sys.exit(f"JWT_SECRET is not set in {a.vars}")
    print(mint(a.account, secret, a.ttl, settings.get("JWT_USER_CLAIM") or "sub", settings.get("JWT_ISSUER"), settings.get("JWT_AUDIENCE")))


if __name__ == "__main__":
    main()
