"""The Grafana dashboard only queries metrics (and labels) that Atrium exports, in valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from atrium.platform import metrics
from tests.platform.promtool import promtool_or_fail

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "atrium-dashboard.json"

# Labels Prometheus itself attaches to every scraped series.
SCRAPE_LABELS = {"job", "instance"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Every sample name Atrium exports, with the label names it carries."""
    names: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels = set(value._labelnames)
            for family in value.describe():
                for suffix in _SUFFIXES[family.type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    names[family.name + suffix] = labels | extra
    return names


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every query of every panel, rows included."""
    found = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        found.extend(target["expr"] for target in panel.get("targets", []))
    return found


def test_dashboard_is_valid_json_with_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert len(expressions(dashboard)) >= 15
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables


def test_every_expression_uses_exported_metrics_and_labels() -> None:
    known = exported()
    assert "atrium_http_requests_total" in known
    for expr in expressions(json.loads(DASHBOARD.read_text())):
        used = set(re.findall(r"\b(atrium_[a-z0-9_]+)\b", expr))
        assert used, f"queries no Atrium metric: {expr}"
        unknown = used - known.keys()
        assert not unknown, f"{expr}: no such metric {unknown}"
        available = set().union(*(known[name] for name in used)) | SCRAPE_LABELS
        labels = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            labels |= {label.strip() for label in group.split(",") if label.strip()}
        assert labels <= available, f"{expr}: unknown labels {labels - available}"


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses the expressions of a rules file; Grafana's variables get plain values.
    rules = [
        {
            "record": f"atrium:dashboard_query_{index}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$job", ".*"),
        }
        for index, expr in enumerate(expressions(json.loads(DASHBOARD.read_text())))
    ]
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool_or_fail(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
