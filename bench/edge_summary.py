"""Summarizes bench/edge.sh runs: median worker CPU µs per POST /send of our edge and
the JS peer, their ratio, bundle sizes (gzip -9) and time to the first 202."""

import re
import statistics
import sys
from pathlib import Path


def field(text, pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def main(out: Path) -> None:
    rows = {}
    for f in sorted(out.glob("*.txt")):
        who = f.stem.split("-")[0]
        t = f.read_text()
        rows.setdefault(who, []).append({
            "cpu_us": field(t, r"workerd-user=(\d+)"),
            "first_202_ms": field(t, r"first 202 after (\d+) ms"),
            "gzip_bytes": field(t, r"bundle total: \d+ B raw, (\d+) B gzip"),
            "rps": field(t, r"run 1 .*rps=([\d.]+)"),
        })
    med = {who: {k: statistics.median([r[k] for r in rs if r[k] is not None] or [0]) for k in rs[0]} for who, rs in rows.items()}
    for who, m in med.items():
        print(f"{who:5} median of {len(rows[who])}: worker CPU {m['cpu_us']:.0f} µs/request, {m['rps']:.0f} req/s, "
              f"first 202 after {m['first_202_ms']:.0f} ms, bundle {m['gzip_bytes'] / 1024:.1f} KiB gzip -9")
    if "rust" in med and "js" in med and med["js"]["cpu_us"]:
        print(f"CPU ratio rust/js: {med['rust']['cpu_us'] / med['js']['cpu_us']:.2f} (goal <= 1.0); "
              f"wasm bundle {med['rust']['gzip_bytes'] / 1024 / 1024:.2f} MiB gzip (goal <= 1 MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
