"""Drift: identical data scores about zero, a shifted distribution scores above its threshold."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from dmlops.data.drift import compare
from dmlops.data.errors import DataError


def write(path, columns):
    pq.write_table(pa.table(columns), path)
    return str(path)


def sample(seed, size=4_000, shift=0.0, mix=(0.5, 0.3, 0.2)):
    rng = np.random.default_rng(seed)
    return {
        "delay": rng.normal(10.0 + shift, 5.0, size),
        "seats": rng.integers(50, 300, size),
        "carrier": rng.choice(["AA", "UA", "DL"], size, p=list(mix)),
    }


@pytest.fixture
def reference(tmp_path):
    return write(tmp_path / "reference.parquet", sample(1))


def test_identical_data_has_no_drift(reference):
    report = compare(reference, reference)
    assert not report.drifted
    assert {column.column: column.score for column in report.columns} == pytest.approx(
        {"delay": 0.0, "seats": 0.0, "carrier": 0.0}, abs=1e-12)


def test_a_fresh_sample_of_the_same_distribution_stays_below_thresholds(tmp_path, reference):
    report = compare(reference, write(tmp_path / "same.parquet", sample(2)))
    assert not report.drifted
    assert all(column.score < 0.02 for column in report.columns)


def test_shifted_numeric_and_categorical_distributions_drift(tmp_path, reference):
    current = write(tmp_path / "shifted.parquet", sample(3, shift=5.0, mix=(0.2, 0.3, 0.5)))
    report = compare(reference, current)
    scores = {column.column: column for column in report.columns}
    assert scores["delay"].method == "psi" and scores["delay"].score > 0.2 and scores["delay"].drifted
    assert scores["carrier"].method == "jensen-shannon" and scores["carrier"].score > 0.1
    assert not scores["seats"].drifted
    assert report.drifted and report.drifted_columns == ["delay", "carrier"]


def test_psi_uses_reference_deciles(tmp_path, reference):
    current_columns = sample(4, shift=2.0)
    report = compare(reference, write(tmp_path / "current.parquet", current_columns), columns=["delay"])
    (delay,) = report.columns
    edges = np.quantile(sample(1)["delay"], np.arange(1, 10) / 10)
    expected_ref = np.diff(np.searchsorted(np.sort(sample(1)["delay"]), edges, side="right"), prepend=0, append=4000)
    expected_cur = np.diff(np.searchsorted(np.sort(current_columns["delay"]), edges, side="right"), prepend=0, append=4000)
    assert np.array(delay.reference) * 4000 == pytest.approx(expected_ref)
    assert np.array(delay.current) * 4000 == pytest.approx(expected_cur)
    ref, cur = expected_ref / 4000, expected_cur / 4000
    assert delay.score == pytest.approx(np.sum((cur - ref) * np.log(cur / ref)))
    assert len(delay.bins) == 10 and delay.bins[0].startswith("≤ ")


def test_categorical_scores_equal_scipy(tmp_path, reference):
    current_columns = sample(5, mix=(0.45, 0.35, 0.2))
    current = write(tmp_path / "current.parquet", current_columns)
    ref_counts = [np.sum(sample(1)["carrier"] == name) for name in ("AA", "UA", "DL")]
    cur_counts = [np.sum(current_columns["carrier"] == name) for name in ("AA", "UA", "DL")]
    (js,) = compare(reference, current, columns=["carrier"]).columns
    assert js.bins == ["AA", "UA", "DL"]
    assert js.score == pytest.approx(jensenshannon(ref_counts, cur_counts, base=2))
    (chi,) = compare(reference, current, columns=["carrier"], categorical_method="chi-square",
                     categorical_threshold=0.05).columns
    assert chi.score == pytest.approx(chi2_contingency([ref_counts, cur_counts]).pvalue)
    assert chi.drifted == (chi.score < 0.05)


def test_a_rise_in_nulls_is_drift(tmp_path, reference):
    columns = sample(1)
    carriers = columns["carrier"].astype(object)
    carriers[: len(carriers) // 4] = None
    report = compare(reference, write(tmp_path / "nulls.parquet", {**columns, "carrier": carriers}),
                     columns=["carrier"])
    (carrier,) = report.columns
    assert carrier.bins[-1] == "(null)" and carrier.current[-1] == pytest.approx(0.25)
    assert carrier.drifted


def test_time_columns_are_compared_only_when_named_and_missing_columns_are_listed(tmp_path):
    at = pa.array(np.arange(100) * 3600, pa.int64()).cast(pa.timestamp("s", tz="UTC"))
    later = pa.array((np.arange(100) + 1000) * 3600, pa.int64()).cast(pa.timestamp("s", tz="UTC"))
    reference = write(tmp_path / "r.parquet", {"at": at, "value": np.arange(100.0), "old": np.zeros(100)})
    current = write(tmp_path / "c.parquet", {"at": later, "value": np.arange(100.0)})
    report = compare(reference, current)
    assert [column.column for column in report.columns] == ["value"]
    assert report.skipped["old"] == "missing from the current dataset"
    assert "time column" in report.skipped["at"]
    (at_drift,) = compare(reference, current, columns=["at"]).columns
    assert at_drift.drifted and at_drift.bins[-1].startswith("> 1970-01-04")
    with pytest.raises(DataError, match="column 'old' is not in .*c.parquet"):
        compare(reference, current, columns=["old"])


def test_report_outputs(tmp_path, reference):
    report = compare(reference, write(tmp_path / "shifted.parquet", sample(6, shift=5.0)))
    metrics = report.metrics()
    assert metrics["drifted"] == 1.0 and metrics["drifted_columns"] == 1.0
    assert metrics["psi.delay"] == pytest.approx(report.columns[0].score)
    assert "jensen-shannon.carrier" in metrics
    document = json.loads(json.dumps(report.to_dict()))
    assert document["drifted_columns"] == ["delay"]
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "DRIFT" in page and page.count("<svg") >= 3
    assert "<script" not in page and "http" not in page


def test_unknown_method_is_refused(reference):
    with pytest.raises(ValueError, match="categorical_method must be one of"):
        compare(reference, reference, categorical_method="kl")
