"""Deterministic HR CSV files for benchmarks and tests (no header, as the real files come).

``hired_employees.csv`` rows reference departments 1..12 and jobs 1..183 and spread over
2020-2022 (so the 2021 reports have something to count). ``dirty`` adds rows with an empty
field, a bad date, an unknown department and a duplicate id, about one in ``dirty`` rows.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEPARTMENTS = 12
JOBS = 183
FIRST = [
    "Harold", "Ty", "Lyman", "Lola", "Marla", "Ann", "Louise", "Rebecca", "Cedric", "Aisha",
    "Chloé", "Jürgen", "Zoë", "Mateo", "Noor", "Akira", "Olga", "Kwame", "Ines", "Priya",
]  # fmt: skip
LAST = [
    "Vogt", "Hazelton", "Schmidt", "Farrell", "Ortiz", "Nguyen", "Okafor", "Müller", "Rossi",
    "Kowalski", "Haddad", "Tanaka", "Silva", "O'Neil", "Dubois", "Larsen", "Novak", "Reyes",
]  # fmt: skip
START = datetime(2020, 1, 1, tzinfo=UTC)
SPAN_SECONDS = int((datetime(2023, 1, 1, tzinfo=UTC) - START).total_seconds())


def write_departments(path: Path) -> None:
    """Departments 1..12 (the challenge's count)."""
    path.write_text("".join(f"{i},Department {i:02d}\n" for i in range(1, DEPARTMENTS + 1)))


def write_jobs(path: Path) -> None:
    """Jobs 1..183 (the challenge's count)."""
    path.write_text("".join(f"{i},Job {i:03d}\n" for i in range(1, JOBS + 1)))


def write_hired_employees(path: Path, rows: int, *, seed: int = 2021, dirty: int = 0) -> int:
    """Write ``rows`` employees; returns how many of them are valid."""
    rng = random.Random(seed)
    valid = last_valid = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        lines = []
        for i in range(1, rows + 1):
            when = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            dep = rng.randint(1, DEPARTMENTS)
            job = rng.randint(1, JOBS)
            stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            kind = rng.randrange(dirty * 4) if dirty else -1
            if kind == 0:
                lines.append(f"{i},,{stamp},{dep},{job}\n")
            elif kind == 1:
                lines.append(f"{i},{name},2021-02-30T00:00:00Z,{dep},{job}\n")
            elif kind == 2:
                lines.append(f"{i},{name},{stamp},{DEPARTMENTS + 1},{job}\n")
            elif kind == 3 and last_valid:
                lines.append(f"{last_valid},{name},{stamp},{dep},{job}\n")
            else:
                lines.append(f"{i},{name},{stamp},{dep},{job}\n")
                valid += 1
                last_valid = i
            if len(lines) >= 10_000:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
    return valid


def write_all(folder: Path, rows: int, *, dirty: int = 0) -> int:
    """The three files of a load, in ``folder``; returns the valid employee count."""
    folder.mkdir(parents=True, exist_ok=True)
    write_departments(folder / "departments.csv")
    write_jobs(folder / "jobs.csv")
    return write_hired_employees(folder / "hired_employees.csv", rows, dirty=dirty)
