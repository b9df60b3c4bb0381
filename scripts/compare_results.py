"""Compare two evaluation results.json files metric by metric (CI: the demo on the CPU and on a second device).

    python scripts/compare_results.py A.json B.json --tolerance 0.01

Every float metric of every benchmark (timings left out) must agree within the tolerance (absolute; the metrics
are fractions, so 0.01 is one point).  Prints each benchmark's largest difference; exit 1 names what differs.
"""

from __future__ import annotations

import argparse
import json
import sys

SKIPPED = ("seconds", "ms")


def differences(a: dict, b: dict) -> dict[str, tuple[str, float]]:
    """benchmark -> (metric, |a - b|) of its largest difference; a benchmark or metric missing on one side
    counts as infinitely different."""
    out = {}
    for name in sorted(set(a) | set(b)):
        if not isinstance(a.get(name), dict) or not isinstance(b.get(name), dict):
            out[name] = ("(missing on one side)", float("inf"))
            continue
        worst = ("", 0.0)
        for metric, value in a[name].items():
            if not isinstance(value, float) or metric in SKIPPED:
                continue
            other = b[name].get(metric)
            diff = abs(value - other) if isinstance(other, (int, float)) else float("inf")
            if diff > worst[1]:
                worst = (metric, diff)
        out[name] = worst
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    a, b = (json.loads(open(path).read()) for path in (args.a, args.b))
    bad = []
    for name, (metric, diff) in differences(a, b).items():
        print(f"{name:28s} largest difference {diff:.6f} ({metric or 'none'})")
        if diff > args.tolerance:
            bad.append(f"{name}.{metric}")
    if bad:
        print(f"differ by more than {args.tolerance}: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"all metrics agree within {args.tolerance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
