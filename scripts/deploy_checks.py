"""Checks of deploy/ that need Python libraries (run by scripts/check-deploy.sh in .venv-deploy).

deploy_checks.py helm OUT_DIR          lint the chart (strict) and render it, per values set
deploy_checks.py same-shape A B        A and B render the same kinds of objects
deploy_checks.py hcl FILE…             parse every file with python-hcl2 (+ Nomad rules)
deploy_checks.py no-replica-migrates FILE…   no rendered API container runs `migrate`
deploy_checks.py compose-variant PG MYSQL      rendered compose files differ in the database only
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "atrium"

# Each values set renders one file; together they exercise every `if` in the templates.
HELM_VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no-autoscaling-chart-secret": {
        "autoscaling": {"enabled": False},
        "secret": {"create": True, "values": {"ATRIUM_TOKEN_SECRET": "x"}},
        "ingress": {"tlsSecret": ""},
    },
    "mysql-chart-secret": {
        "secret": {
            "create": True,
            "values": {
                "ATRIUM_DATABASE_URL": "mysql://atrium:x@mysql.example:3306/atrium?ssl_mode=REQUIRED"
            },
        },
    },
    "minimal": {
        "ingress": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "migrations": {"enabled": False},
        "serviceAccount": {"create": False},
    },
}


def helm(out_dir: Path) -> int:
    """Lint strictly, then render every values set into OUT_DIR/helm-<set>.yaml."""
    import helm_python

    out_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    for name, values in HELM_VALUE_SETS.items():
        report = helm_python.lint(str(CHART), values, strict=True, kube_version="v1.31.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [
            {"severity": 3, "path": "", "error": e} for e in report["errors"]
        ]
        for problem in problems:
            print(f"helm lint [{name}]: {problem['path']}: {problem['error']}")
            status = 1
        chart = helm_python.Chart.load(str(CHART))
        manifests = chart.render(values, name="atrium", namespace="atrium", is_install=True)
        documents = [
            text.strip()
            for path, text in sorted(manifests.items())
            if path.endswith((".yaml", ".yml")) and text.strip()
        ]
        (out_dir / f"helm-{name}.yaml").write_text("\n---\n".join(documents) + "\n")
        print(f"helm [{name}]: {len(documents)} manifest file(s) rendered, lint clean")
    print(f"helm SDK {helm_python.helm_sdk_version()}")
    return status


def _kinds(path: Path) -> set[str]:
    return {d["kind"] for d in yaml.safe_load_all(path.read_text()) if d}


def same_shape(a: Path, b: Path) -> int:
    """The chart renders what the kustomize base does (the Namespace aside: Helm's -n makes it)."""
    left, right = _kinds(a) - {"Namespace"}, _kinds(b) - {"Namespace"}
    if left != right:
        print(
            f"{a.name} and {b.name} differ: only in {a.name}: {sorted(left - right)}, "
            f"only in {b.name}: {sorted(right - left)}"
        )
        return 1
    print(f"{a.name} and {b.name} render the same kinds: {', '.join(sorted(left))}")
    return 0


def no_replica_migrates(paths: list[Path]) -> int:
    """Migrations run in a Job only: no Deployment container runs ``atrium migrate``."""
    status = 0
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                words = [*container.get("command", []), *container.get("args", [])]
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if "migrate" in words or env.get("ATRIUM_AUTO_MIGRATE") == "true":
                    print(f"{path.name}: Deployment {doc['metadata']['name']} migrates")
                    status = 1
        kinds = _kinds(path)
        if "Job" not in kinds and "helm-minimal" not in path.name:
            print(f"{path.name}: no migration Job")
            status = 1
    return status


def _attr(block: dict[str, Any], key: str) -> Any:
    """An attribute's value (python-hcl2 wraps attributes in one-element lists)."""
    value = block.get(key)
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _nomad_rules(path: Path, doc: dict[str, Any]) -> list[str]:
    """What every Atrium Nomad job must have: checks on the API, migrations only in batch."""
    problems: list[str] = []
    for job in doc.get("job", []):
        for job_name, spec in job.items():
            for group in spec.get("group", []):
                for group_name, body in group.items():
                    tasks = [t for block in body.get("task", []) for t in block.values()]
                    args = [
                        arg
                        for task in tasks
                        for config in task.get("config", [])
                        for arg in (_attr(config, "args") or [])
                    ]
                    if _attr(spec, "type") == "batch":
                        if args != ["migrate"]:
                            problems.append(f"{job_name}: the batch job must only migrate")
                        continue
                    if "migrate" in args:
                        problems.append(f"{job_name}.{group_name}: replicas must not migrate")
                    checks = [c for s in body.get("service", []) for c in s.get("check", [])]
                    paths = {_attr(c, "path") for c in checks}
                    if not {"/livez", "/readyz"} <= paths:
                        problems.append(f"{job_name}.{group_name}: needs /livez and /readyz checks")
                    if _attr(spec, "type") == "service" and not spec.get("update"):
                        problems.append(f"{job_name}: needs an update block (rolling, by checks)")
    return [f"{path.name}: {p}" for p in problems]


def hcl(paths: list[Path]) -> int:
    """Parse every HCL file; Nomad job files must also follow the rules above."""
    import hcl2

    status = 0
    for path in paths:
        try:
            with path.open() as handle:
                doc = hcl2.load(handle)
        except Exception as exc:
            print(f"{path}: does not parse: {exc}")
            status = 1
            continue
        problems = _nomad_rules(path, doc) if path.name.endswith(".nomad.hcl") else []
        for problem in problems:
            print(problem)
            status = 1
        if not problems:
            print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: parses")
    return status


def compose_variant(postgres: Path, mysql: Path) -> int:
    """``mysql`` is ``postgres`` with MariaDB for PostgreSQL: same services and settings."""
    pg = yaml.safe_load(postgres.read_text())
    my = yaml.safe_load(mysql.read_text())
    problems: list[str] = []
    pg_services, my_services = dict(pg["services"]), dict(my["services"])
    if pg_services.pop("postgres", None) is None or my_services.pop("mariadb", None) is None:
        problems.append("expected a postgres service in one file and a mariadb one in the other")
    if set(pg_services) != set(my_services):
        problems.append(f"services differ: {sorted(pg_services)} vs {sorted(my_services)}")
    for name in sorted(set(pg_services) & set(my_services)):
        a, b = pg_services[name], my_services[name]
        for service, db in ((a, "postgres"), (b, "mariadb")):
            service.get("depends_on", {}).pop(db, None)
        urls = [s.get("environment", {}).pop("ATRIUM_DATABASE_URL", None) for s in (a, b)]
        if urls[0] is not None and not (
            urls[0].startswith("postgresql://") and str(urls[1]).startswith("mysql://")
        ):
            problems.append(f"{name}: ATRIUM_DATABASE_URL {urls[1]!r} is not the mysql:// twin")
        if a != b:
            problems.append(f"{name}: differs beyond the database")
    for problem in problems:
        print(f"compose variant: {problem}")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    """Dispatch the sub-commands."""
    if not argv:
        print(__doc__)
        return 2
    command, *rest = argv
    if command == "helm":
        return helm(Path(rest[0]))
    if command == "same-shape":
        return same_shape(Path(rest[0]), Path(rest[1]))
    if command == "hcl":
        return hcl([Path(p) for p in rest])
    if command == "compose-variant":
        return compose_variant(Path(rest[0]), Path(rest[1]))
    if command == "no-replica-migrates":
        return no_replica_migrates([Path(p) for p in rest])
    print(f"unknown command {command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
