#!/usr/bin/env python3
"""Function lengths in crates/sandport/src.

Counts each `fn`'s lines from its signature to its closing brace, skipping `#[cfg(test)]`
modules and `tests.rs` files. Prints max, median and p90, and every fn over the limit.
Exits 1 when a limit is broken.

    scripts/fn-lengths.py [--max 60] [--median 10] [--p90 30] [SRC_DIR]
"""

import argparse
import pathlib
import re
import statistics
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip_literals(line):
    """The line without string/char literals and line comments, so braces in them don't count."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def production_lines(text):
    lines = text.splitlines()
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip().startswith("#[cfg(test)]") and nxt.strip().startswith("mod "):
            return lines[:i]
    return lines


def functions(path):
    lines = production_lines(path.read_text())
    found = []
    i = 0
    while i < len(lines):
        match = FN.match(lines[i])
        if not match:
            i += 1
            continue
        depth, opened, end = 0, False, None
        for j in range(i, len(lines)):
            code = strip_literals(lines[j])
            if not opened and ";" in code and "{" not in code:
                break  # a declaration without a body (trait method)
            for ch in code:
                if ch == "{":
                    depth += 1
                    opened = True
                elif ch == "}":
                    depth -= 1
            if opened and depth == 0:
                end = j
                break
        if end is None:
            i += 1
            continue
        found.append((end - i + 1, f"{path}:{i + 1}", match.group(6)))
        i += 1  # nested fns are counted too
    return found


def percentile(values, q):
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("src", nargs="?", default="crates/sandport/src")
    parser.add_argument("--max", type=int, default=60)
    parser.add_argument("--median", type=float, default=10)
    parser.add_argument("--p90", type=int, default=30)
    args = parser.parse_args()

    all_fns = []
    for path in sorted(pathlib.Path(args.src).rglob("*.rs")):
        if path.name == "tests.rs":
            continue
        all_fns.extend(functions(path))
    if not all_fns:
        print("no functions found", file=sys.stderr)
        return 2
    lengths = [n for n, _, _ in all_fns]
    longest = max(lengths)
    median = statistics.median(lengths)
    p90 = percentile(lengths, 0.9)
    print(f"functions: {len(lengths)}  max: {longest}  median: {median}  p90: {p90}")
    offenders = sorted((f for f in all_fns if f[0] > args.max), reverse=True)
    for n, where, name in offenders:
        print(f"  {n:4} {name}  {where}")
    ok = not offenders and median <= args.median and p90 <= args.p90
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
