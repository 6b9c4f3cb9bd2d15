"""deploy/: the Prometheus rules pass promtool (syntax, and their unit tests in alerts_test.yml),
the example configuration loads them, and the Grafana dashboard is one Grafana imports as it is.

That every metric they name is exported is tests/acceptance/test_deploy_metrics.py's (it needs
the real processes). promtool comes with Debian's `prometheus` package; without it these tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import dashboard_expressions, metric_names, rule_expressions

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "doitong-receiver.json"
# The alerts issue #12 asks for, by what they watch.
EXPECTED_ALERTS = {
    "DoitongReceiverOutboxBacklogAge",  # backlog age
    "DoitongReceiverDeliveryBacklogAge",
    "DoitongReceiverDeadDeliveries",
    "DoitongReceiverSubscriberFailing",  # failure ratio
    "DoitongReceiverCircuitOpen",
    "DoitongReceiverForgedSignatures",
    "DoitongReceiverDatabaseDown",
    "DoitongReceiverWebhooksUnavailable",
    "DoitongReceiverReconciliationStuck",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool not found (Debian: apt install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent)


def test_promtool_checks_the_rules() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in checked.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_example_configuration_loads_the_rules() -> None:
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_severity_a_summary_and_a_runbook_in_the_readme() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in alerts} == EXPECTED_ALERTS
    readme = (DEPLOY.parent / "README.md").read_text()
    for rule in alerts:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["annotations"]["runbook"] == f"README.md#prometheus-and-grafana: {rule['alert']}"
        assert f"`{rule['alert']}`" in readme, f"README has no entry for {rule['alert']}"


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_the_dashboard_imports_as_it_is() -> None:
    """What Grafana needs to import the file without editing it: a uid and schema version, a
    Prometheus data source chosen at import (a variable, not a uid of ours), unique panel ids,
    panels inside the 24-column grid and not on top of each other, queries with a refId."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "doitong-receiver" and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["refId"] and target["expr"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_expressions(dashboard)))
    for metric in (
        "receiver_webhooks_total",  # ingest rate by outcome, forged signatures
        "receiver_webhook_duration_seconds_bucket",  # latency
        "receiver_outbox_backlog",  # backlog
        "receiver_deliveries_pending",
        "receiver_subscriber_delivery_attempts_total",  # deliveries by state and subscriber, failures
        "receiver_delivery_attempts_total",
        "receiver_subscriber_circuit_open",  # breaker
        "receiver_database_up",
        "receiver_deliveries_dead",
        "receiver_jobs_unresolved",
    ):
        assert metric in shown, metric


def test_metric_names_are_read_out_of_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, kind) (rate(receiver_delivery_latency_seconds_bucket{kind!="x"}[5m])))'
    ) == {"receiver_delivery_latency_seconds_bucket"}
    assert metric_names(
        '(sum by (subscriber) (increase(a_total{outcome!="delivered"}[15m])) / sum without (instance) (b)) > 0.5'
        " and on (subscriber) c >= 10 unless d offset 5m"
    ) == {"a_total", "b", "c", "d"}
    assert metric_names('max(receiver_database_up) == bool 0 or vector(1) * x{y="sum(z)"}') == {
        "receiver_database_up",
        "x",
    }
    assert metric_names("count by (version) (receiver_build_info)") == {"receiver_build_info"}
    # Everything the checked-in files name is found (no expression reads nothing).
    rules = yaml.safe_load(RULES.read_text())
    for name, expression in rule_expressions(rules):
        assert metric_names(expression), name
    for title, expression in dashboard_expressions(json.loads(DASHBOARD.read_text())):
        assert metric_names(expression), title
