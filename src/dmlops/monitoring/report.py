"""The monitor's HTML page, in the shape of the validation and drift reports (:mod:`dmlops.data.report`):
the verdicts first, then performance, label lag and the drift of each feature with both distributions."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from dmlops.data.report import STYLE, drift_html

if TYPE_CHECKING:
    from dmlops.monitoring.monitor import MonitorReport


def _badge(text: str, style: str) -> str:
    return f'<span class="badge {style}">{escape(text)}</span>'


def _figure(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def monitor_html(report: MonitorReport, title: str) -> str:
    """The HTML page of a monitor report."""
    verdicts = (_badge("DRIFTED", "error") if report.drifted else _badge("NO DRIFT", "ok")) + " " + \
        (_badge("DEGRADED", "error") if report.degraded else _badge("PERFORMANCE OK", "ok"))
    share = report.labelled_rows / report.rows if report.rows else 0.0
    summary = (f'<p class="summary">{verdicts} <span>{report.rows} predictions in the window</span>'
               f"<span>{report.labelled_rows} labelled ({share:.1%})</span>"
               f"<span>degraded judged on the {report.performance_source} AUC</span></p>")
    drop = None if report.baseline_auc is None or report.auc is None else report.baseline_auc - report.auc
    performance = (
        "<table><tr><th>figure</th><th>value</th></tr>"
        f'<tr><td>baseline AUC (reference)</td><td class="num">{_figure(report.baseline_auc)}</td></tr>'
        f'<tr><td>realized AUC (labelled rows)</td><td class="num">{_figure(report.realized_auc)}</td></tr>'
        f'<tr><td>estimated AUC (CBPE, all rows)</td><td class="num">{_figure(report.estimated_auc)}</td></tr>'
        f'<tr><td>AUC drop (limit {report.max_auc_drop:g})</td><td class="num">{_figure(drop)}</td></tr>'
        f'<tr><td>realized accuracy</td><td class="num">{_figure(report.realized_accuracy)}</td></tr>'
        f'<tr><td>estimated accuracy</td><td class="num">{_figure(report.estimated_accuracy)}</td></tr>'
        + "".join(f'<tr><td>label lag {escape(name)}</td><td class="num">{value / 3600:.2f} h</td></tr>'
                  for name, value in report.label_lag_seconds.items())
        + "</table>")
    prediction = ""
    if report.prediction_drift:
        drift = report.prediction_drift
        prediction = (f"<p>prediction drift: {escape(drift['method'])} {drift['score']:.4g} "
                      f"(threshold {drift['threshold']:g}) "
                      f"{_badge('drift', 'error') if drift['drifted'] else _badge('ok', 'ok')}</p>")
    notes = "".join(f'<p class="muted">{escape(note)}</p>' for note in report.notes)
    drift_body = drift_html(report.feature_drift)
    drift_body = drift_body[drift_body.index("<body>") + len("<body>"):drift_body.index("</body>")]
    body = (f"<h1>{escape(title)}</h1>{summary}{notes}<h2>Performance</h2>{performance}"
            f"<h2>Prediction drift</h2>{prediction or '<p class=muted>not measured</p>'}"
            f"<h2>Feature drift</h2>{drift_body}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
