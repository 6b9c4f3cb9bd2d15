"""The metric names a PromQL expression reads, and the names a /metrics page offers, for the tests
that keep deploy/ (alerting rules, Grafana dashboard) in step with what the processes export.

Not a PromQL parser: enough of one for the expressions we write. Strings, label matchers
(`{...}`), range and subquery brackets (`[...]`) and grouping label lists (`by (...)`,
`without`, `on`, `ignoring`, `group_left`, `group_right`) are removed first; what is left that
looks like an identifier and is not a function call, a keyword or a number is a metric name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)


def metric_names(expression: str) -> set[str]:
    """The metric (series) names `expression` reads."""
    text = _STRING.sub('""', expression)
    text = _BRACES.sub("{}", text)
    text = _BRACKETS.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics page offers: each family's samples, and the names its type
    implies even while it has none (a labelled counter nobody has incremented yet still declares
    itself, and `x_total` is what PromQL reads of counter `x`)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type in ("histogram", "gaugehistogram"):
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update(family.name + suffix for suffix in ("_sum", "_count"))
    return names


def rule_expressions(rules: dict[str, object]) -> Iterable[tuple[str, str]]:
    """(rule name, expression) of every rule in a Prometheus rule file, loaded from YAML."""
    groups = rules["groups"]
    assert isinstance(groups, list)
    for group in groups:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def dashboard_expressions(dashboard: dict[str, object]) -> Iterable[tuple[str, str]]:
    """(panel title, expression) of every query of a Grafana dashboard, rows' panels included."""
    panels = list(dashboard.get("panels", []))  # type: ignore[call-overload]
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
