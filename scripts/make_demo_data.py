"""Write the sample data ``atrium demo`` ships (``src/atrium/demo/data/``), deterministically.

HR files in the Globant challenge's layout (CSV, no header): 12 departments, 183 jobs and 2000
hires over 2019 to 2023, about 2 % of them with an empty field (the API rejects those with
reasons). Market files: 100 trading days (AlphaVantage's ``compact`` size) up to 2023-03-24 in
the two daily layouts, IBM as ``TIME_SERIES_DAILY`` and AAPL as ``TIME_SERIES_DAILY_ADJUSTED``;
the last 20 days are those of ``tests/market/fixtures``, the earlier ones a random walk into
them. Like those fixtures, the prices are made up: this is not market history.

Run ``python scripts/make_demo_data.py`` after changing it; the output is the same every time.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "atrium" / "demo" / "data"
FIXTURES = ROOT / "tests" / "market" / "fixtures"

DEPARTMENTS = [
    "Product Management", "Sales", "Research and Development", "Business Development",
    "Engineering", "Human Resources", "Services", "Support", "Marketing", "Training", "Legal",
    "Accounting",
]  # fmt: skip
ROLES = [
    "Account Coordinator", "Account Executive", "Account Representative", "Accountant",
    "Accounting Assistant", "Actuary", "Administrative Assistant", "Administrative Officer",
    "Analog Circuit Design manager", "Analyst Programmer", "Assistant Manager",
    "Assistant Media Planner", "Assistant Professor", "Audiologist", "Biostatistician",
    "Budget/Accounting Analyst", "Business Systems Development Analyst", "Chemical Engineer",
    "Chief Design Engineer", "Civil Engineer", "Clinical Specialist",
    "Community Outreach Specialist", "Compensation Analyst", "Computer Systems Analyst",
    "Cost Accountant", "Data Coordinator",
    "Database Administrator", "Dental Hygienist", "Design Engineer", "Developer",
    "Editor", "Electrical Engineer", "Engineer", "Environmental Specialist", "Environmental Tech",
    "Executive Secretary", "Financial Advisor", "Financial Analyst", "Food Chemist",
    "General Manager", "Geological Engineer", "Geologist", "Graphic Designer",
    "Health Coach", "Help Desk Operator", "Help Desk Technician", "Human Resources Assistant",
    "Human Resources Manager", "Information Systems Manager", "Internal Auditor",
    "Junior Executive", "Legal Assistant", "Librarian", "Marketing Assistant",
    "Marketing Manager", "Mechanical Systems Engineer", "Media Manager", "Nuclear Power Engineer",
    "Nurse", "Nurse Practitioner", "Office Assistant", "Operator", "Paralegal",
    "Payment Adjustment Coordinator", "Pharmacist", "Physical Therapy Assistant",
    "Product Engineer", "Professor", "Programmer", "Programmer Analyst", "Project Manager",
    "Quality Control Specialist", "Quality Engineer", "Recruiter", "Recruiting Manager",
    "Registered Nurse", "Research Assistant", "Research Associate", "Research Nurse",
    "Safety Technician", "Sales Associate", "Sales Representative", "Senior Cost Accountant",
    "Senior Developer", "Senior Editor", "Senior Financial Analyst", "Senior Quality Engineer",
    "Senior Sales Associate", "Social Worker", "Software Consultant", "Software Engineer",
    "Software Test Engineer", "Speech Pathologist", "Staff Accountant", "Staff Scientist",
    "Statistician", "Structural Analysis Engineer", "Structural Engineer", "Systems Administrator",
    "Tax Accountant", "Teacher", "Technical Writer", "Web Designer", "Web Developer",
    "VP Accounting", "VP Marketing", "VP Product Management", "VP Quality Control", "VP Sales",
]  # fmt: skip
LEVELED = [
    "Account Representative", "Accountant", "Administrative Assistant", "Analyst Programmer",
    "Biostatistician", "Civil Engineer", "Computer Systems Analyst", "Database Administrator",
    "Design Engineer", "Developer", "Editor", "Engineer", "Environmental Tech",
    "Financial Analyst", "Geologist", "Help Desk Operator", "Nurse", "Office Assistant",
    "Programmer", "Quality Engineer", "Research Assistant", "Research Associate",
    "Safety Technician", "Software Consultant", "Software Engineer", "Software Test Engineer",
    "Staff Accountant", "Staff Scientist", "Statistician", "Systems Administrator",
    "Tax Accountant", "Web Designer", "Web Developer",
]  # fmt: skip
FIRST = [
    "Harold", "Ty", "Lyman", "Lola", "Marcelo", "Ada", "Grace", "Alan", "Edsger", "Barbara",
    "Donald", "Margaret", "Ken", "Dennis", "Radia", "Frances", "John", "Katherine", "Tim",
    "Vint", "Leslie", "Niklaus", "Sophie", "Guido", "Anita", "Mary", "Lynn", "Hedy", "Shafi",
    "Yukihiro", "Bjarne", "Adele", "Jean", "Ivan", "Ole", "Kristen", "Fran", "Carol", "Joan",
    "Jim", "Ward", "Martha", "Linus", "Rasmus", "Larry", "Susan", "Roberto", "Amaya", "Chen",
    "Priya", "Kofi", "Ines", "Mateo", "Noor", "Olga", "Tariq", "Yara", "Zoltan", "Aiko",
]  # fmt: skip
LAST = [
    "Vogt", "Henderson", "Kinnett", "Oakes", "Rodriguez", "Lovelace", "Hopper", "Turing",
    "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Ritchie", "Perlman", "Allen",
    "Backus", "Johnson", "Berners-Lee", "Cerf", "Lamport", "Wirth", "Wilson", "van Rossum",
    "Borg", "Keller", "Conway", "Lamarr", "Goldwasser", "Matsumoto", "Stroustrup", "Goldberg",
    "Sammet", "Sutherland", "Dahl", "Nygaard", "Spärck Jones", "Shaw", "Bartik", "Gray",
    "Cunningham", "Beyer", "Torvalds", "Lerdorf", "Wall", "Kare", "Ierusalimschy", "Okafor",
    "Nakamura", "Patel", "Mensah", "García", "Haddad", "Ivanova", "Khan", "Santos", "Novak",
]  # fmt: skip
# Hires per year: several years, most of them in 2021 (the reports' default year).
HIRES_PER_YEAR = {2019: 240, 2020: 300, 2021: 720, 2022: 480, 2023: 260}
EMPTY_EVERY = 50  # about 2 % of the hires lack a field


def jobs() -> list[str]:
    """183 job titles, as many as the challenge's jobs.csv."""
    titles = list(ROLES)
    for level in ("II", "III", "IV"):
        titles += [f"{role} {level}" for role in LEVELED]
    return titles[:183]


def hires(rng: random.Random, n_jobs: int) -> list[list[str]]:
    """Rows ``id,name,datetime,department_id,job_id``; a few with one field left empty."""
    rows: list[list[str]] = []
    # Departments hire unevenly (some well above the mean), as real ones do.
    weights = [rng.uniform(0.3, 3.0) for _ in DEPARTMENTS]
    for year, count in HIRES_PER_YEAR.items():
        start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
        seconds = int((dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC) - start).total_seconds())
        for _ in range(count):
            when = start + dt.timedelta(seconds=rng.randrange(seconds))
            department = rng.choices(range(1, len(DEPARTMENTS) + 1), weights)[0]
            rows.append(
                [
                    f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    str(department),
                    str(rng.randrange(1, n_jobs + 1)),
                ]
            )
    rng.shuffle(rows)  # the challenge's file is not in date order either
    out = []
    for index, row in enumerate(rows, start=1):
        if index % EMPTY_EVERY == 17:
            row[rng.randrange(len(row))] = ""
        out.append([str(index), *row])
    return out


def write_csv(path: Path, rows: list[list[str]]) -> None:
    """Challenge layout: no header, commas, quotes only where a field needs them."""

    def field(value: str) -> str:
        return f'"{value}"' if "," in value or '"' in value else value

    path.write_text("".join(",".join(map(field, row)) + "\n" for row in rows), encoding="utf-8")


def market(rng: random.Random, fixture: str, adjusted: bool) -> dict[str, object]:
    """100 trading days ending with the fixture's 20, in the fixture's exact layout."""
    document = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    series: dict[str, dict[str, str]] = document["Time Series (Daily)"]
    known = sorted(series)
    first = dt.date.fromisoformat(known[0])
    first_open = Decimal(series[known[0]]["1. open"])
    ratio = (
        Decimal(series[known[0]]["5. adjusted close"]) / Decimal(series[known[0]]["4. close"])
        if adjusted
        else Decimal(1)
    )
    days: list[dt.date] = []
    day = first
    while len(days) < 80:
        day -= dt.timedelta(days=1)
        if day.weekday() < 5:
            days.append(day)
    price = float(first_open)
    volumes = [int(v["6. volume" if adjusted else "5. volume"]) for v in series.values()]
    added: dict[str, dict[str, str]] = {}
    for day in days:  # walking backwards from the fixture's first day
        close = price
        open_ = close * (1 + rng.gauss(0, 0.008))
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.006)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.006)))
        volume = int(rng.uniform(0.7, 1.3) * sum(volumes) / len(volumes))
        entry = {
            "1. open": f"{open_:.4f}",
            "2. high": f"{high:.4f}",
            "3. low": f"{low:.4f}",
            "4. close": f"{close:.4f}",
        }
        if adjusted:
            entry["5. adjusted close"] = f"{Decimal(f'{close:.4f}') * ratio:.4f}"
            entry["6. volume"] = str(volume)
            entry["7. dividend amount"] = "0.0000"
            entry["8. split coefficient"] = "1.0"
        else:
            entry["5. volume"] = str(volume)
        added[day.isoformat()] = entry
        price = open_ * (1 + rng.gauss(0, 0.012))  # the previous day's close
    merged = dict(sorted({**series, **added}.items(), reverse=True))
    return {"Meta Data": document["Meta Data"], "Time Series (Daily)": merged}


def main() -> None:
    """Write every sample file."""
    rng = random.Random(20211107)
    OUT.mkdir(parents=True, exist_ok=True)
    titles = jobs()
    write_csv(OUT / "departments.csv", [[str(i), d] for i, d in enumerate(DEPARTMENTS, 1)])
    write_csv(OUT / "jobs.csv", [[str(i), t] for i, t in enumerate(titles, 1)])
    write_csv(OUT / "hired_employees.csv", hires(rng, len(titles)))
    for name, fixture, adjusted in (
        ("ibm_time_series_daily.json", "ibm_time_series_daily.json", False),
        ("aapl_time_series_daily_adjusted.json", "aapl_time_series_daily_adjusted.json", True),
    ):
        document = market(rng, fixture, adjusted)
        (OUT / name).write_text(json.dumps(document, indent=4) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
