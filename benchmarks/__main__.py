"""Run benchmarks: ``python -m benchmarks [name ...]`` (all when no name is given).

Each ``benchmarks/bench_<name>.py`` has ``main(argv: list[str]) -> None`` that runs its
alternatives side by side in one run and prints a Markdown table (medians and ratios),
ready to be copied into docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules([str(here)])
        if info.name.startswith("bench_")
    )


def main(argv: list[str]) -> None:
    names = [a for a in argv if not a.startswith("-")] or available()
    options = [a for a in argv if a.startswith("-")]
    unknown = set(names) - set(available())
    if unknown:
        sys.exit(f"unknown benchmark(s) {sorted(unknown)}; available: {available()}")
    for name in names:
        print(f"\n## benchmark: {name}\n", flush=True)
        importlib.import_module(f"benchmarks.bench_{name}").main(options)


if __name__ == "__main__":
    main(sys.argv[1:])
