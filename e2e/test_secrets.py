"""No log the suite wrote holds a secret: the JWT secrets, the AWS secret keys and
session tokens, and the gateway token handed to any edge or worker (recorded by
`devstack.stack` as they are handed over). Runs after every other test (conftest.py).
Configuration files (`.vars`, the record itself) hold them by design and are skipped."""

from harness import JWT_SECRET, LOGS

# The emulator's root key ("test") is not a secret, and short values would match by chance.
MIN_SECRET_CHARS = 8


def test_no_log_holds_a_secret():
    record = LOGS / "secrets.list"
    secrets = {s for s in (record.read_text().split() if record.exists() else []) if len(s) >= MIN_SECRET_CHARS} | {JWT_SECRET}
    logs = [p for p in LOGS.rglob("*") if p.is_file() and p.suffix not in (".vars", ".list", ".rdb", ".env")]
    assert logs, "the suite wrote no log"
    found = []
    for path in logs:
        data = path.read_bytes()
        # Named by position in the record, never by value.
        found += [f"{path.relative_to(LOGS)}: secret #{i}" for i, s in enumerate(sorted(secrets)) if s.encode() in data]
    print(f"figure: {len(secrets)} secrets checked in {len(logs)} log files")
    assert not found, "secrets in logs: " + "; ".join(found)
