"""Run every benchmark: ``python -m bench [NAME ...]`` (``make bench``).

Each module under ``bench/`` exposes ``main(argv)``; each measures its own baselines in the same
run and prints ratios, so figures from different machines stay comparable.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the named benchmarks, or all of them."""
    here = Path(__file__).parent
    available = sorted(
        m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_")
    )
    wanted = argv or available
    unknown = set(wanted) - set(available)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {available}")
        return 2
    status = 0
    for name in wanted:
        print(f"\n##### bench.{name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        status |= int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
