"""Print BENCHMARKS.md's robustness section from what the fault, hostile-input and fuzz tests recorded.

    make test                                  # or: pytest tests/test_{faults,hostile_input,fuzz}_e2e.py
    .venv/bin/python scripts/robustness_report.py [--artifacts var/test-artifacts]

The tests write var/test-artifacts/faults.jsonl (one line per injected fault), hostile-input.json and
fuzz.json; this script only formats them, so every figure comes from a test run.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fault_table(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| fault injected | job ended | attempts | queries used / budget | audit rows "
             "| failed (counted) rows |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        kept = "✓" if row["audit_rows"] == row["queries_used"] <= row["max_queries"] else "✗"
        lines.append(f"| {row['fault']} | {row['status']} | {row['attempts']} | {row['queries_used']:,} / "
                     f"{row['max_queries']:,} | {row['audit_rows']:,} {kept} | {row['failed_rows']} |")
    return lines


def hostile_summary(path: Path) -> list[str]:
    report = json.loads(path.read_text())
    routes = Counter(answer["route"] for answer in report["answers"])
    codes = ", ".join(f"{code} × {count}" for code, count in sorted(report["status_codes"].items()))
    return [
        f"- Hostile uploads: {report['corpus_cases']} corpus cases, {report['requests']} requests "
        f"({', '.join(f'{r} × {n}' for r, n in routes.items())}): {codes}; server errors "
        f"{report['server_errors']}, accepted {report['accepted']}, files or rows left behind "
        f"{len(report['left_behind'])}; slowest refusal {report['slowest_seconds']} s.",
    ]


def fuzz_summary(path: Path) -> list[str]:
    report = json.loads(path.read_text())
    codes = ", ".join(f"{code} × {count}" for code, count in sorted(report["status_codes"].items()))
    return [
        f"- Schema fuzzing (schemathesis): {report['operations_fuzzed']} operations, {report['requests']:,} "
        f"requests in {report['seconds']} s: {codes}; server errors {report['server_errors']}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=ROOT / "var" / "test-artifacts")
    args = parser.parse_args()
    sections = [
        ("faults.jsonl", fault_table, "no fault run recorded (run tests/test_faults_e2e.py)"),
        ("hostile-input.json", hostile_summary, "no hostile-input run recorded"),
        ("fuzz.json", fuzz_summary, "no fuzz run recorded"),
    ]
    for name, render, missing in sections:
        path = args.artifacts / name
        print("\n".join(render(path)) if path.exists() else f"({missing})")
        print()


if __name__ == "__main__":
    main()
