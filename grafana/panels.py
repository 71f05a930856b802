"""Builders for the Grafana dashboard model (plain dicts), used by ``build_dashboards.py``.

Plain dicts rather than grafana-foundation-sdk: the JSON is what Grafana loads and what
reviewers read, and a dependency pinned to one Grafana variant buys nothing here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
Query = tuple[str, str]  # a PromQL expression and its legend

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x; older Grafanas migrate on load, newer ones too
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24  # Grafana's grid is 24 columns wide
DATASOURCE_VARIABLE: Json = {  # the variable every panel's queries go through
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "refresh": 1,
    "regex": "",
    "options": [],
}

# Shared by the dashboards and the alert rules (grafana/rules/taskq-alerts.yaml): change both.
OLDEST_JOB_SLO_SECONDS = 300
PUBLISH_CONFIRM_P99_SECONDS = 1.0


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> Json:
    """Return one Prometheus query of a panel."""
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }


def quantiles(
    metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> list[Query]:
    """Return the ``qs`` quantiles (p50, p95, p99 by default) of a histogram, split by ``by``."""
    group = f"{by}, le" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    where = f"{{{selector}}}" if selector else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{where}[$__rate_interval])))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in qs
    ]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    """Return absolute thresholds; the first step's value is None (the base colour)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


OK = thresholds((None, "green"))


def timeseries(
    title: str,
    description: str,
    series: list[Query],
    *,
    unit: str = "short",
    stack: bool = False,
    limits: Json = OK,
    show_limits: bool = False,
    links: list[Json] | None = None,
    minimum: float | None = 0,
    extra: Json | None = None,
) -> Json:
    """Return a time series panel of ``series``, lettered A, B, C... (:class:`Layout` places it).

    ``minimum`` None lets the axis go below zero; ``extra`` adds field defaults (mappings...).
    """
    custom: Json = {
        "drawStyle": "line",
        "fillOpacity": 20 if stack else 0,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "line+area" if show_limits else "off"},
    }
    defaults: Json = {
        "unit": unit,
        "custom": custom,
        "thresholds": limits,
        "color": {"mode": "palette-classic"},
        "links": links or [],
    }
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults | (extra or {}), "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(series)],
    }


def stat(
    title: str, description: str, expr: str, *, unit: str = "short", limits: Json = OK
) -> Json:
    """Return a single-number panel showing the latest value, coloured by ``limits``."""
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": limits, "color": {"mode": "thresholds"}},
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
        "targets": [target(expr)],
    }


def table(title: str, description: str, expr: str) -> Json:
    """Return a table of an instant query's series, one row per label set."""
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "targets": [target(expr, instant=True) | {"format": "table"}],
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
    }


def label_variable(
    name: str, label: str, query: str, *, multi: bool = True, include_all: bool = True
) -> Json:
    """Return a query variable filled by ``label_values(...)`` (refreshed on time change).

    "All" is the regex ``.*``, so panels filter with ``label=~"$name"`` whatever is picked.
    """
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        # A plain string: every Grafana since 7 reads it (10+ converts it on load).
        "query": query,
        "current": {},
        "hide": 0,
        "includeAll": include_all,
        "allValue": ".*" if include_all else None,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


@dataclass
class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new line."""

    panels: list[Json] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_height: int = 0

    def row(self, title: str) -> None:
        """Start a (non-collapsible) titled row on a new line."""
        self._newline()
        self.add(
            {"type": "row", "title": title, "collapsed": False, "panels": []}, width=WIDTH, height=1
        )
        self._newline()

    def add(self, *panels: Json, width: int = WIDTH // 2, height: int = 8) -> None:
        """Place ``panels`` left to right, each ``width`` columns wide, wrapping when one does not fit."""
        for panel in panels:
            if self._x + width > WIDTH:
                self._newline()
            panel["id"] = len(self.panels) + 1
            panel["gridPos"] = {"h": height, "w": width, "x": self._x, "y": self._y}
            self.panels.append(panel)
            self._x += width
            self._row_height = max(self._row_height, height)

    def _newline(self) -> None:
        self._y += self._row_height
        self._x = 0
        self._row_height = 0


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[Json],
    rows: Sequence[Callable[[Layout], None]],
) -> Json:
    """Return a whole dashboard of ``rows`` (each adds its panels): 6 hours, refreshed every 30 s, linked to the other taskq ones."""
    layout = Layout()
    for add_row in rows:
        add_row(layout)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["taskq"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,  # a shared crosshair lines up cause and effect across panels
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": ["taskq"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "title": "taskq",
            }
        ],
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "panels": layout.panels,
    }
