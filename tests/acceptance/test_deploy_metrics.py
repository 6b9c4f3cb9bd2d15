"""Every metric deploy/ names (alerting rules, Grafana dashboard) is one the processes export:
a real `receiver serve` and `receiver publish` are started and their /metrics scraped.

A rule on a metric nobody exports never fires, and promtool cannot know: this is the check that
catches a renamed metric, a typo, or a rule written for a metric still to come.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.promql import dashboard_expressions, exported_names, metric_names, rule_expressions
from tests.support import MASTER_KEY, SECRET, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RECEIVER = [sys.executable, "-m", "receiver"]


def _env(database_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "RECEIVER_HOME": str(home),
            "RECEIVER_MASTER_KEY": base64.urlsafe_b64encode(MASTER_KEY).decode(),
            "DOITONG_WEBHOOK_SECRET": SECRET,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _scrape(url: str, process: subprocess.Popen[str], seconds: float = 60) -> str:
    """/metrics once the process answers /readyz (so the database gauges are there too)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return httpx.get(url + "/metrics", timeout=5).text
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready in time")


def test_every_metric_in_the_rules_and_the_dashboard_is_exported(database_url: str, tmp_path: Path) -> None:
    env = _env(database_url, tmp_path)
    server_port, metrics_port = free_port(), free_port()
    processes = [
        subprocess.Popen(
            [*RECEIVER, "serve", "--port", str(server_port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [*RECEIVER, "publish", "--metrics-port", str(metrics_port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    try:
        exported = exported_names(_scrape(f"http://127.0.0.1:{server_port}", processes[0]))
        exported |= exported_names(_scrape(f"http://127.0.0.1:{metrics_port}", processes[1]))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=30)
    assert "receiver_webhooks_total" in exported and "receiver_database_up" in exported  # the scrape worked

    named: dict[str, set[str]] = {}
    for rule, expression in rule_expressions(yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())):
        for name in metric_names(expression):
            named.setdefault(name, set()).add(f"alerts.yml: {rule}")
    dashboard = json.loads((DEPLOY / "grafana" / "doitong-receiver.json").read_text())
    for title, expression in dashboard_expressions(dashboard):
        for name in metric_names(expression):
            named.setdefault(name, set()).add(f"dashboard: {title}")
    missing = {name: sorted(where) for name, where in named.items() if name not in exported}
    assert not missing, f"named in deploy/ but exported by neither process: {missing}"
