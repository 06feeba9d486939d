"""Self-contained HTML reports of validation and drift, readable in the KFP UI: inline CSS and SVG,
no scripts, no external resources."""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dmlops.data.drift import DriftReport
    from dmlops.data.statistics import ColumnStatistics
    from dmlops.data.validation import ValidationReport

MAX_BARS = 30
STYLE = """
body { font-family: -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif; font-size: 13px;
       color: #202124; margin: 16px; }
h1 { font-size: 18px; margin: 0 0 8px; } h2 { font-size: 15px; margin: 20px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 2px 8px; border-radius: 10px; font-weight: 600; color: #fff; }
.error { background: #d93025; } .warn { background: #e37400; } .ok { background: #188038; }
.summary span { margin-right: 16px; }
.muted { color: #5f6368; }
.bar { display: flex; align-items: center; gap: 6px; margin: 1px 0; }
.bar div { background: #1a73e8; height: 9px; }
details summary { cursor: pointer; color: #1a73e8; }
pre { white-space: pre-wrap; font-size: 11px; margin: 4px 0; }
svg rect.reference { fill: #9aa0a6; } svg rect.current { fill: #1a73e8; } svg rect.hist { fill: #1a73e8; }
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _show(value: Any) -> str:
    """A compact text form of a statistic or rule value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _badge(text: str, style: str) -> str:
    return f'<span class="badge {style}">{escape(text)}</span>'


def histogram_svg(counts: list[int], labels: list[str], width: int = 180, height: int = 40) -> str:
    """An inline SVG bar chart of counts, each bar titled with its label and count."""
    if not counts:
        return ""
    top = max(counts) or 1
    bar = width / len(counts)
    rects = []
    for index, (count, label) in enumerate(zip(counts, labels)):
        bar_height = height * count / top
        rects.append(
            f'<rect class="hist" x="{index * bar:.2f}" y="{height - bar_height:.2f}" width="{max(bar - 1, 1):.2f}" '
            f'height="{bar_height:.2f}"><title>{escape(label)}: {count}</title></rect>')
    return f'<svg width="{width}" height="{height}" role="img">{"".join(rects)}</svg>'


def paired_svg(bins: list[str], reference: list[float], current: list[float],
               width: int = 320, height: int = 60) -> str:
    """An inline SVG of two distributions over the same bins: reference (grey) beside current (blue)."""
    if not bins:
        return ""
    top = max(max(reference), max(current)) or 1.0
    slot = width / len(bins)
    rects = []
    for index, (label, ref, cur) in enumerate(zip(bins, reference, current)):
        for offset, share, style in ((0.0, ref, "reference"), (slot / 2, cur, "current")):
            bar_height = height * share / top
            rects.append(
                f'<rect class="{style}" x="{index * slot + offset:.2f}" y="{height - bar_height:.2f}" '
                f'width="{max(slot / 2 - 1, 1):.2f}" height="{bar_height:.2f}">'
                f'<title>{escape(label)}: {style} {share:.2%}</title></rect>')
    return f'<svg width="{width}" height="{height}" role="img">{"".join(rects)}</svg>'


def _top_values(stats: ColumnStatistics) -> str:
    if not stats.top_values:
        return ""
    top = max(n for _, n in stats.top_values)
    rows = [f'<div class="bar"><div style="width:{80 * n / top:.0f}px"></div>'
            f'{escape(str(value))} <span class="muted">{n}</span></div>' for value, n in stats.top_values]
    return "".join(rows)


def _distribution(stats: ColumnStatistics) -> str:
    if stats.histogram:
        counts = [bin_["count"] for bin_ in stats.histogram]
        labels = [f"[{_show(bin_['lower'])}, {_show(bin_['upper'])}]" for bin_ in stats.histogram]
        return histogram_svg(counts, labels)
    return _top_values(stats)


def statistics_table(statistics: dict[str, ColumnStatistics]) -> str:
    """The per-column statistics table with a histogram or top values for each column."""
    head = ("<tr><th>column</th><th>type</th><th>count</th><th>nulls</th><th>distinct</th><th>min</th>"
            "<th>max</th><th>mean</th><th>std</th><th>p05 / p50 / p95</th><th>distribution</th></tr>")
    rows = []
    for stats in statistics.values():
        quantiles = " / ".join(_show(stats.quantiles.get(name)) for name in ("p05", "p50", "p95")) \
            if stats.quantiles else ""
        rows.append(
            f"<tr><td><b>{escape(stats.name)}</b></td><td>{escape(stats.type)}</td>"
            f'<td class="num">{stats.count}</td>'
            f'<td class="num">{stats.nulls} <span class="muted">({stats.null_fraction:.1%})</span></td>'
            f'<td class="num">{_show(stats.distinct)}</td><td class="num">{escape(_show(stats.min))}</td>'
            f'<td class="num">{escape(_show(stats.max))}</td><td class="num">{_show(stats.mean)}</td>'
            f'<td class="num">{_show(stats.std)}</td><td class="num">{quantiles}</td>'
            f"<td>{_distribution(stats)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def validation_html(report: ValidationReport) -> str:
    """The HTML page of a validation report."""
    verdict = _badge("PASSED", "ok") if report.passed else _badge("FAILED", "error")
    summary = (f'<p class="summary">{verdict} <span>{report.rows} rows</span><span>{report.checks} checks</span>'
               f"<span>{len(report.errors)} errors</span><span>{len(report.warnings)} warnings</span></p>")
    if report.findings:
        head = ("<tr><th>severity</th><th>check</th><th>column</th><th>expected</th><th>observed</th>"
                "<th>offending rows</th><th>finding</th></tr>")
        rows = []
        for finding in report.findings:
            examples = ""
            if finding.examples:
                shown = "\n".join(json.dumps(example, ensure_ascii=False) for example in finding.examples)
                examples = f"<details><summary>examples</summary><pre>{escape(shown)}</pre></details>"
            rows.append(
                f"<tr><td>{_badge(finding.severity, finding.severity)}</td><td>{escape(finding.check)}</td>"
                f"<td>{escape(finding.column or '')}</td><td>{escape(_show(finding.expected))}</td>"
                f"<td>{escape(_show(finding.observed))}</td><td class=\"num\">{finding.count}</td>"
                f"<td>{escape(finding.message)}{examples}</td></tr>")
        findings = f"<table>{head}{''.join(rows)}</table>"
    else:
        findings = '<p class="muted">Every check passed.</p>'
    body = (f"<h1>Validation of {escape(report.dataset)}</h1>{summary}<h2>Findings</h2>{findings}"
            f"<h2>Column statistics</h2>{statistics_table(report.statistics)}")
    return _page(f"Validation of {report.dataset}", body)


def drift_html(report: DriftReport) -> str:
    """The HTML page of a drift report."""
    verdict = _badge("DRIFT", "error") if report.drifted else _badge("NO DRIFT", "ok")
    summary = (f'<p class="summary">{verdict} <span>reference {escape(report.reference_path)}: '
               f"{report.reference_rows} rows</span><span>current {escape(report.current_path)}: "
               f"{report.current_rows} rows</span><span>{len(report.drifted_columns)} of {len(report.columns)} "
               f"columns drifted</span></p>"
               '<p class="muted"><svg width="10" height="10"><rect class="reference" width="10" height="10"/></svg> '
               'reference <svg width="10" height="10"><rect class="current" width="10" height="10"/></svg> current</p>')
    head = ("<tr><th>column</th><th>method</th><th>score</th><th>threshold</th><th>drift</th>"
            "<th>distributions</th></tr>")
    rows = []
    for column in sorted(report.columns, key=lambda column: not column.drifted):
        shown = min(len(column.bins), MAX_BARS)
        more = f'<div class="muted">{len(column.bins) - shown} more bins not drawn</div>' \
            if len(column.bins) > shown else ""
        chart = paired_svg(column.bins[:shown], column.reference[:shown], column.current[:shown])
        badge = _badge("drift", "error") if column.drifted else _badge("ok", "ok")
        rows.append(
            f"<tr><td><b>{escape(column.column)}</b></td><td>{escape(column.method)}</td>"
            f'<td class="num">{column.score:.4g}</td><td class="num">{column.threshold:g}</td>'
            f"<td>{badge}</td><td>{chart}{more}</td></tr>")
    skipped = ""
    if report.skipped:
        items = "".join(f"<li><b>{escape(name)}</b>: {escape(reason)}</li>" for name, reason in report.skipped.items())
        skipped = f"<h2>Not compared</h2><ul>{items}</ul>"
    body = (f"<h1>Drift of {escape(report.current_path)}</h1>{summary}<h2>Columns</h2>"
            f"<table>{head}{''.join(rows)}</table>{skipped}")
    return _page(f"Drift of {report.current_path}", body)
