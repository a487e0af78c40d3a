"""Summarise a py-spy ``--format raw`` profile: top functions by own time and by total time.

    .venv/bin/python -m bench.pyspy_top bench/out/profile.txt [--top 25]
    .venv/bin/python -m bench.pyspy_top bench/out/profile.txt --against bench/out/bare.txt 0.78 1.25

Each raw line is ``frame;frame;...;leaf count`` with frames like ``send (plugins/upstream.py:97)``.
Own time counts the leaf frame; total time counts every function once per stack. Line numbers are
dropped so a function's lines add up. "ours" = frames in ``codexlb/`` or ``plugins/``. ``--against``
puts two profiles side by side in microseconds per request (each scaled by its CPU per request).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
OURS = re.compile(r"(^|/)(codexlb|plugins)/")
ENTRY = re.compile(r"(^|/)codexlb/(cli/|__main__\.py)")
"""Start-up frames (``codexlb serve``) under which the whole server runs: not charged as our code."""


def short(frame: str) -> tuple[str, bool]:
    """``file:function`` with site-packages and the repo prefix cut off, and whether it is our code."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), False
    path = match["file"]
    for cut in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if cut in path:
            path = path.split(cut, 1)[1]
    mine = bool(OURS.search(match["file"])) and not ENTRY.search(match["file"]) \
        and "site-packages" not in match["file"]
    return f"{path}:{match['func']}", mine


def package(name: str) -> str:
    """Where a ``file:function`` lives: ``h11``, ``asyncio``, ``json``; ``codexlb/sse.py`` for our modules."""
    path = name.rsplit(":", 1)[0]
    head = path.split("/", 1)[0]
    if head in ("codexlb", "plugins"):
        return path
    return head.removesuffix(".py")


def load(path: Path) -> tuple[Counter[str], Counter[str], Counter[str], int, set[str]]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    ours_own: Counter[str] = Counter()
    ours: set[str] = set()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [short(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        own[frames[-1][0]] += count
        for name, mine in frames:
            if mine:
                ours.add(name)
        for name in {name for name, _ in frames}:
            total[name] += count
        # own time of our code: the innermost codexlb/plugins frame (library calls charged to their caller)
        innermost = next((name for name, mine in reversed(frames) if mine), None)
        if innermost is not None:
            ours_own[innermost] += count
    return own, total, ours_own, samples, ours


def report(path: Path, top: int = 20) -> str:
    own, total, ours_own, samples, ours = load(path)
    if not samples:
        return f"{path}: no samples"

    def pct(n: int) -> str:
        return f"{100 * n / samples:5.1f}%"

    packages: Counter[str] = Counter()
    for name, n in own.items():
        packages[package(name)] += n
    lines = [f"{samples} samples from {path}", "", f"own time by package / our module (top {top}):"]
    lines += [f"  {pct(n)}  {name}" for name, n in packages.most_common(top)]
    lines += ["", f"top {top} by own time (any code):"]
    lines += [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    lines += ["", f"top {top} of our code (codexlb/, plugins/) by own time incl. library calls made directly:"]
    lines += [f"  {pct(n)}  {name}" for name, n in ours_own.most_common(top)]
    lines += ["", f"top {top} of our code by total time (including everything below):"]
    lines += [f"  {pct(n)}  {name}" for name, n in total.most_common() if name in ours][:top]
    return "\n".join(lines)


def per_request(path: Path, cpu_ms: float) -> tuple[Counter[str], Counter[str]]:
    """Own time by package and by function of a profile, in microseconds per request."""
    own, _, _, samples, _ = load(path)
    scale = 1000 * cpu_ms / samples if samples else 0.0
    by_function: Counter[str] = Counter({name: n * scale for name, n in own.items()})
    by_package: Counter[str] = Counter()
    for name, us in by_function.items():
        by_package[package(name)] += us
    return by_package, by_function


def compare(base: Path, base_ms: float, other: Path, other_ms: float, top: int = 25) -> str:
    """What ``other`` spends per request beyond ``base`` (profiles taken under the same load), by
    package and by function. Each profile's shares are scaled by its measured CPU ms per request."""
    lines = [f"us per request: {other.name} ({other_ms:.3f} ms CPU) minus {base.name} ({base_ms:.3f} ms CPU)"]
    for title, a, b in zip(("by package", "by function"), per_request(base, base_ms), per_request(other, other_ms),
                           strict=True):
        diff = Counter({k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)})
        lines += ["", f"{title} (top {top} differences):", f"{'base':>8} {'other':>8} {'diff':>8}"]
        lines += [f"{a.get(k, 0.0):8.1f} {b.get(k, 0.0):8.1f} {d:+8.1f}  {k}" for k, d in diff.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="summarise a py-spy raw profile")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--against", nargs=3, metavar=("BASE", "BASE_MS", "MS"),
                        help="compare with BASE (another raw profile); BASE_MS and MS are each one's CPU ms/request")
    args = parser.parse_args(argv)
    if args.against:
        base, base_ms, ms = args.against
        print(compare(Path(base), float(base_ms), args.profile, float(ms), args.top))
    else:
        print(report(args.profile, args.top))


if __name__ == "__main__":
    main()
