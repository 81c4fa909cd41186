"""How far off the ETA of a finished ``reproduce`` was, from its ``OUT/progress.log`` (``src/eta.py``).

    python benchmarks/eta_error.py runs/quick

For each moment at a quarter, half and three quarters of the elapsed total (first logged line to the
"end" line), the ETA shown then (the last progress line at or before that moment) against the time that
was really left: error = ETA - left, in seconds and as a share of what was left (> 0: too pessimistic).
Add ``--all`` for every line. Reads the last launch in the log; exits 2 if it has not ended.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository, not this folder, goes on the path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

from src.eta import clock, read_events  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75)


def errors(events: list[dict], fractions=FRACTIONS) -> list[dict]:
    """One row per fraction: {"at", "t", "what", "eta_s", "left_s", "error_s", "error"} (None fields where
    no ETA was shown yet)."""
    t0, t1 = events[0]["t"], events[-1]["t"]
    shown = [e for e in events if e["event"] == "progress"]
    rows = []
    for f in fractions:
        moment = t0 + f * (t1 - t0)
        line = next((e for e in reversed(shown) if e["t"] <= moment), None)
        if line is None or line["eta_s"] is None:
            rows.append({"at": f, "t": moment - t0, "what": line and line["what"], "eta_s": None, "left_s": t1 - moment,
                         "error_s": None, "error": None})
            continue
        left = t1 - line["t"]
        err = line["eta_s"] - left
        rows.append({"at": f, "t": line["t"] - t0, "what": line["what"], "eta_s": line["eta_s"], "left_s": left,
                     "error_s": err, "error": err / left if left else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="output folder of a finished reproduce (holds progress.log)")
    p.add_argument("--all", action="store_true", help="also print every logged line")
    a = p.parse_args(argv)
    try:
        events = read_events(Path(a.out))
    except FileNotFoundError:
        sys.stderr.write(f"error: {Path(a.out) / 'progress.log'} not found; run reproduce with --out {a.out}\n")
        return 2
    if not events or events[-1]["event"] != "end":
        sys.stderr.write(f"error: the last launch logged in {a.out}/progress.log has not ended\n")
        return 2
    total = events[-1]["t"] - events[0]["t"]
    print(f"{a.out}: {clock(total)} from the grid's start to the end ({len(events)} lines)")
    if a.all:
        for e in events:
            eta = "?" if e["eta_s"] is None else clock(e["eta_s"])
            print(f"  {clock(e['t'] - events[0]['t']):>8}  ETA {eta:>8}  left {clock(events[-1]['t'] - e['t']):>8}  "
                  f"{e['what']}")
    print("| at | shown at | line | ETA | really left | error |")
    print("|---|---|---|---|---|---|")
    for r in errors(events):
        if r["eta_s"] is None:
            print(f"| {r['at']:.0%} | — | {r['what']} | ? | {clock(r['left_s'])} | — |")
        else:
            print(f"| {r['at']:.0%} | {clock(r['t'])} | {r['what']} | {clock(r['eta_s'])} | {clock(r['left_s'])} | "
                  f"{r['error_s']:+.0f} s ({r['error']:+.0%}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
