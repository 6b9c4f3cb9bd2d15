"""What the benchmark reports share: the header that says what machine and code were measured,
the statistics its tables print, and PASS/FAIL.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def print_machine(title: str, packages: Iterable[str]) -> None:
    """The header's first lines: the benchmark, the cores, the load before the run, the versions."""
    cores = os.cpu_count() or 0
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(title, flush=True)
    print(f"  cores        : {cores} (usable by this process: {affinity})")
    print(f"  load average : {load_average()} (1, 5, 15 min, before the run)")
    print(f"  python       : {platform.python_version()}; {versions(packages)}")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions(names: Iterable[str]) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def code_version() -> str:
    """The commit measured, and whether receiver/ or migrations/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "receiver", "migrations"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not head:
        return "unknown (no git)"
    if not dirty:
        return f"git {head}"
    files = ", ".join(line[3:] for line in dirty[:6]) + (", ..." if len(dirty) > 6 else "")
    return f"git {head} + uncommitted changes in {len(dirty)} file(s): {files}"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile of values sorted already (nearest rank, no interpolation)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def verdict(value: bool | None) -> str:
    return "-" if value is None else ("PASS" if value else "FAIL")


def print_header(header: str) -> None:
    """A table's column header and its rule."""
    print(header)
    print("-" * len(header))
