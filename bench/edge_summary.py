"""Summarizes bench/edge.sh runs: median worker CPU µs per POST /send of our edge and
the JS peer, their ratio, bundle sizes (gzip -9) and time to the first 202; exits
non-zero when a figure is missing, any answer was not the expected 202, or a goal is
missed (CPU ratio <= 1.0, our bundle <= 1 MB gzip)."""

import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import Goals  # noqa: E402

FIELDS = {
    "cpu_us": r"workerd-user=(\d+)",
    "first_202_ms": r"first 202 after (\d+) ms",
    "gzip_bytes": r"bundle total: \d+ B raw, (\d+) B gzip",
    "rps": r"run 1 .*rps=([\d.]+)",
}


def runs(out: Path) -> dict:
    """{who: [{field: value or None, "non_expected": total over the run's lines}]}."""
    rows = {}
    for f in sorted(out.glob("*.txt")):
        text = f.read_text()
        row = {k: (float(m.group(1)) if (m := re.search(p, text)) else None) for k, p in FIELDS.items()}
        counts = [int(n) for n in re.findall(r"non_expected=(\d+)", text)]
        row["non_expected"] = sum(counts) if counts else None
        rows.setdefault(f.stem.split("-")[0], []).append(row)
    return rows


def median(rows: list, key: str):
    values = [r[key] for r in rows]
    return None if any(v is None for v in values) or not values else statistics.median(values)


def main(out: Path, expected_runs: int) -> None:
    goals = Goals("bench/edge.sh")
    rows = runs(out)
    med = {}
    for who in ("rust", "js"):
        rs = rows.get(who, [])
        # A median of fewer runs than asked for is not the figure the summary names.
        goals.equal(f"{who} runs", len(rs), expected_runs)
        med[who] = {k: median(rs, k) for k in FIELDS}
        goals.equal(f"{who} answers other than 202", sum(r["non_expected"] for r in rs) if rs and all(r["non_expected"] is not None for r in rs) else None, 0)
        for k in FIELDS:
            goals.at_least(f"{who} {k}", med[who][k], 0)  # present in every run
        m = med[who]
        if None not in m.values():
            print(f"{who:5} median of {len(rs)}: worker CPU {m['cpu_us']:.0f} µs/request, {m['rps']:.0f} req/s, "
                  f"first 202 after {m['first_202_ms']:.0f} ms, bundle {m['gzip_bytes'] / 1024:.1f} KiB gzip -9")
    rust, js = med["rust"]["cpu_us"], med["js"]["cpu_us"]
    goals.at_most("CPU ratio rust/js", round(rust / js, 2) if rust and js else None, 1.0)
    gz = med["rust"]["gzip_bytes"]
    goals.at_most("rust bundle MiB gzip", round(gz / 1024 / 1024, 2) if gz else None, 1.0)
    goals.finish()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3)
