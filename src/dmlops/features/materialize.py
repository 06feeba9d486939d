"""Materialize feature views into the online store, per view, with the range tracked in the registry.

Feast records each materialized ``[start, end]`` on the feature view in the registry (and ``apply`` keeps
it). ``incremental`` continues each view from the end of its own tracked range, so a retry after a failure
redoes only the views that did not finish and leaves no gap: nothing is skipped and nothing is written
twice. A view that was never materialized starts at ``start``: Feast's own default (now - TTL) would skip
historical data.

Each view's rows are read the way :mod:`dmlops.features.asof` reads them, through
:mod:`dmlops.platform.storage` (so a source on KFP's object store is read where KFP keeps it, with no DuckDB
extension to download), reduced in DuckDB to the latest row per entity in the range with the semantics of
Feast's ``pull_latest_from_table_or_query`` (``feast/infra/offline_stores/ibis.py``: time within
``[start, end]``, the latest time wins, ties to the latest created time), and written with Feast's
``write_to_online_store``; the range is then recorded with ``registry.apply_materialization`` as Feast's
``FeatureStore.materialize`` records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from dmlops.data.sandbox import sandboxed_connection
from dmlops.features.config import open_store
from dmlops.features.errors import FeatureStoreError
from dmlops.privacy import encryption


def parse_time(text: str, what: str) -> datetime:
    """An ISO date or date-time as an aware UTC datetime (UTC when no zone is given)."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise FeatureStoreError(f"{what}={text!r} is not an ISO date or date-time (e.g. 2013-01-01)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat() if moment else ""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_latest_rows(feature_store: Any, view: Any, start: datetime, end: datetime) -> None:
    """Write the latest source row per entity with a time in ``[start, end]`` to the online store."""
    source = view.batch_source
    if not source.path:
        raise FeatureStoreError(f"feature view {view.name!r} reads a {type(source).__name__}, not a file source")
    column_of = {name: column for column, name in source.field_mapping.items()}
    keys = [column_of.get(column.name, column.name) for column in view.entity_columns]
    features = [column_of.get(feature.name, feature.name) for feature in view.features]
    times = [source.timestamp_field, *([source.created_timestamp_column] if source.created_timestamp_column else [])]
    columns = list(dict.fromkeys([*keys, *features, *times]))
    rows = encryption.read_table(source.path, columns=columns)  # decrypted when encrypted
    order = ", ".join(f"CAST({_quote(column)} AS TIMESTAMPTZ) DESC NULLS LAST" for column in times)
    partition = f"PARTITION BY {', '.join(_quote(key) for key in keys)} " if keys else ""
    time = f"CAST({_quote(source.timestamp_field)} AS TIMESTAMPTZ)"
    connection = sandboxed_connection()
    connection.register("source", rows)
    latest = connection.sql(
        f"SELECT {', '.join(_quote(column) for column in columns)} FROM source WHERE {time} BETWEEN ? AND ? "
        f"QUALIFY row_number() OVER ({partition}ORDER BY {order}) = 1",
        params=[start, end],
    ).to_arrow_table()
    if latest.num_rows:
        feature_store.write_to_online_store(view.name, df=latest.to_pandas(), allow_registry_cache=False)


@dataclass
class MaterializeReport:
    """Per view: the range written now (empty when up to date) and the tracked range end afterwards."""

    incremental: bool
    end: str
    views: list[dict[str, str]] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for a KFP artifact."""
        return asdict(self)

    def markdown(self) -> str:
        """A table of the views, for a KFP Markdown output."""
        mode = "incremental" if self.incremental else "range"
        lines = [f"# Feast materialize ({mode}) up to {self.end}", "",
                 "| view | written from | written to | status | tracked until |", "|---|---|---|---|---|"]
        lines += [f"| {v['view']} | {v['start']} | {v['end']} | {v['status']} | {v['tracked_until']} |" for v in self.views]
        return "\n".join(lines) + "\n"


def materialize(
    store: dict[str, Any],
    *,
    end: str,
    start: str = "",
    views: list[str] | None = None,
    incremental: bool = True,
) -> MaterializeReport:
    """Write the latest feature values of ``[start, end]`` (both inclusive) to the online store, view by
    view (all online feature views when ``views`` is empty).

    ``incremental``: each view from the end of its tracked range (``start`` only for a view never
    materialized); a view already tracked up to ``end`` is reported up to date. Otherwise the whole
    ``[start, end]`` is written again (the online store keeps one value per entity, so a rerun is
    idempotent).
    """
    end_time = parse_time(end, "end")
    start_time = parse_time(start, "start") if start else None
    if not incremental and start_time is None:
        raise FeatureStoreError("a range materialization needs start (or pass incremental=True)")
    feature_store = open_store(store)
    registered = {view.name: view for view in feature_store.list_feature_views(allow_cache=False) if view.online}
    names = views or sorted(registered)
    unknown = sorted(set(names) - set(registered))
    if unknown:
        raise FeatureStoreError(
            f"feature views {unknown} are not registered online views of project {feature_store.project!r}; "
            f"registered: {sorted(registered)}. Run apply first."
        )
    report = MaterializeReport(incremental=incremental, end=_iso(end_time))
    for name in names:
        tracked_end = registered[name].most_recent_end_time
        view_start = (tracked_end or start_time) if incremental else start_time
        if view_start is None:
            raise FeatureStoreError(
                f"feature view {name!r} has never been materialized, so an incremental run needs start "
                "(the earliest event time to load)"
            )
        if view_start >= end_time:
            report.views.append({"view": name, "start": "", "end": "", "status": "up to date",
                                 "tracked_until": _iso(tracked_end)})
            continue
        _write_latest_rows(feature_store, registered[name], view_start, end_time)
        feature_store.registry.apply_materialization(registered[name], feature_store.project, view_start, end_time)
        tracked = feature_store.get_feature_view(name, allow_registry_cache=False).most_recent_end_time
        report.views.append({"view": name, "start": _iso(view_start), "end": _iso(end_time),
                             "status": "materialized", "tracked_until": _iso(tracked)})
    return report
