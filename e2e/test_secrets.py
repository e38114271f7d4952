"""No log the suite wrote holds a secret, as written or escaped (JSON, URL encoding):
the JWT secrets, the AWS secret keys and session tokens (the emulator's users' and
those the deploy tests made), the gateway tokens and the Redis auth tokens handed to any
edge or worker (recorded by `devstack.stack` where they are made or handed over). Runs
after every other test (conftest.py). Configuration files (`.vars`, the record
itself) hold them by design and are skipped."""

import json
from urllib.parse import quote, quote_plus

from harness import JWT_SECRET, LOGS

# The emulator's root key ("test") is not a secret, and short values would match by chance.
MIN_SECRET_CHARS = 8


def forms(secret: str) -> set:
    """How a secret may appear in a log: as it is, inside a JSON string, URL-encoded."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], quote(secret, safe=""), quote_plus(secret)}


def test_no_log_holds_a_secret():
    record = LOGS / "secrets.list"
    assert record.exists(), f"{record} is missing: the secrets handed to the parts were not recorded, so nothing would be checked"
    secrets = {s for s in record.read_text().split() if len(s) >= MIN_SECRET_CHARS} | {JWT_SECRET}
    logs = [p for p in LOGS.rglob("*") if p.is_file() and p.suffix not in (".vars", ".list", ".rdb", ".env")]
    assert logs, "the suite wrote no log"
    found = []
    for path in logs:
        data = path.read_bytes()
        # Named by position in the record, never by value.
        found += [f"{path.relative_to(LOGS)}: secret #{i}" for i, s in enumerate(sorted(secrets)) if any(f.encode() in data for f in forms(s))]
    print(f"figure: {len(secrets)} secrets checked in {len(logs)} log files")
    assert not found, "secrets in logs: " + "; ".join(found)


def test_escaped_secrets_are_found():
    """The check itself: a secret with characters that escape differently is found in
    each of its forms."""
    secret = 'a/b+c"d&e f'
    assert {'a/b+c"d&e f', 'a/b+c\\"d&e f', "a%2Fb%2Bc%22d%26e%20f", "a%2Fb%2Bc%22d%26e+f"} <= forms(secret)
