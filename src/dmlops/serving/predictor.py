"""The dmlops predictor: a ``kserve.Model`` serving an exported dmlops model over V1 and V2.

Every request is checked against the model's feature schema before anything runs: a missing, unknown or
mistyped field gets a 400 that names it (never a 500). V1 takes ``{"instances": [{feature: value}, ...]}``
(or lists in feature order) and answers ``{"predictions": [...]}`` by the model's task
(:mod:`dmlops.serving.answers`): the positive class's probability (binary), ``{"label", "probabilities"}``
(multiclass) or the value (regression). V2 takes one input tensor per feature (shape ``[n]`` or ``[n, 1]``)
and answers a ``probability`` tensor (binary), ``label`` and ``probabilities`` [n, classes] tensors
(multiclass) or a ``value`` tensor (regression), with a generated response id when the request has none. With a feature store, rows that carry the entity keys get the store's
features from its online store before the check.

A model a user's code exported through the training runtime (:class:`TensorModel`) takes the named input
tensors its metadata declares: V1 ``{"instances": [row, ...]}`` (a row is ``{input: value}``, or the value
itself for a one-input model) answered with ``{"predictions": [model output row, ...]}``; V2 one tensor
per input answered with one ``output`` tensor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from dmlops.platform import logs
from dmlops.serving import metrics
from dmlops.serving.answers import answer_scores, v1_predictions
from dmlops.serving.features import DOMAIN_POLICIES, V2_DATATYPES, RequestError
from dmlops.serving.model import ServedModel, TensorModel, open_model
from dmlops.serving.prediction_log import REQUEST_ID_HEADER, PredictionLog, export_version, request_id

OUTPUT_NAME = "probability"
LABEL_OUTPUT_NAME, PROBABILITIES_OUTPUT_NAME, VALUE_OUTPUT_NAME = "label", "probabilities", "value"
TENSOR_OUTPUT_NAME = "output"
_LOG = logging.getLogger(__name__)


@dataclass
class FeastEnrichment:
    """Online features to add to requests: the store spec (``dmlops.features.config``), the feature
    references (``"view:feature"``) and the entity key fields requests carry."""

    store: dict[str, Any]
    features: list[str]
    entity_keys: list[str]
    _store: Any = field(default=None, repr=False)
    _reads_async: bool = field(default=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeastEnrichment:
        missing = [key for key in ("store", "features", "entity_keys") if not data.get(key)]
        if missing:
            raise ValueError(f"feast enrichment config needs {missing}: store spec, feature references, entity keys")
        return cls(store=data["store"], features=list(data["features"]), entity_keys=list(data["entity_keys"]))

    @property
    def feature_names(self) -> list[str]:
        return [reference.split(":", 1)[-1] for reference in self.features]

    def open(self) -> None:
        from dmlops.features.config import open_store

        self._store = open_store(self.store)
        # as Feast's own feature server decides: online stores with async reads (Redis) are awaited,
        # the others (SQLite) read in a worker thread; neither blocks the server's event loop
        self._reads_async = self._store._get_provider().async_supported.online.read

    async def enrich(self, rows: list[Any]) -> None:
        """Fill the store's features into every row that carries all entity keys (values the request sent
        win over the store's)."""
        keyed = [
            row for row in rows
            if isinstance(row, dict) and all(row.get(key) is not None for key in self.entity_keys)
        ]
        if not keyed:
            return
        entity_rows = [{key: row[key] for key in self.entity_keys} for row in keyed]
        if self._reads_async:
            response = await self._store.get_online_features_async(features=self.features, entity_rows=entity_rows)
        else:
            response = await asyncio.to_thread(self._store.get_online_features, features=self.features,
                                               entity_rows=entity_rows)
        values = response.to_dict()
        for name in self.feature_names:
            column = values[name]
            for row, value in zip(keyed, column):
                row.setdefault(name, value)


def _column(values: Any, shape: list[int], name: str) -> list[Any]:
    """A V2 input tensor's data as one value per row; shape [n] or [n, 1]."""
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(f"input {name!r}: shape {shape} is not [rows] or [rows, 1]; send one value per row")
    if isinstance(values, np.ndarray):
        values = values.tolist()
    flat = [item for part in values for item in (part if isinstance(part, list) else [part])]
    if len(flat) != shape[0]:
        raise RequestError(f"input {name!r}: shape {shape} says {shape[0]} rows but the data has {len(flat)} values")
    return [value.decode() if isinstance(value, bytes) else value for value in flat]


def _require_finite(outputs: np.ndarray) -> None:
    """A RequestError naming the rows whose prediction is not finite (inputs beyond what the model's float32
    arithmetic holds): no NaN or infinity is ever answered, logged or counted in /metrics."""
    rows = np.flatnonzero(~np.isfinite(np.asarray(outputs, np.float64).reshape(len(outputs), -1)).all(axis=1))
    if rows.size:
        raise RequestError(f"rows {rows[:10].tolist()}: the model gives no finite prediction for these inputs; "
                           "they are far outside the training data (serve with --domain_policy clip or reject)")


class DmlopsModel(kserve.Model):
    """Serve the exported model at ``model_uri`` under ``name`` (local path or gs://, s3:// URI).

    With a ``prediction_log`` every answered request's rows and outputs are logged under its request id
    (:func:`~dmlops.serving.prediction_log.request_id`), which the response carries in ``x-request-id``.
    """

    def __init__(
        self,
        name: str,
        model_uri: str,
        *,
        model_format: str = "",
        threads: int = 1,
        feast: FeastEnrichment | None = None,
        domain_policy: str = "flag",
        prediction_log: PredictionLog | None = None,
    ):
        super().__init__(name, return_response_headers=True)
        self.prediction_log = prediction_log
        self.model_uri = model_uri
        self.model_format = model_format
        self.threads = threads
        self.feast = feast
        if domain_policy not in DOMAIN_POLICIES:
            raise ValueError(f"domain policy {domain_policy!r}: choose one of {DOMAIN_POLICIES}")
        self.domain_policy = domain_policy
        self.model: ServedModel | TensorModel | None = None
        self.version = ""
        self._extra_fields = frozenset(feast.entity_keys if feast else ())

    def load(self) -> bool:
        self.model = open_model(self.model_uri, self.model_format, self.threads)
        if self.feast and isinstance(self.model, TensorModel):
            raise ValueError("feature store enrichment needs a dmlops tabular model (named features)")
        if self.feast:
            self.feast.open()
        self.version = (self.prediction_log.model_version if self.prediction_log else "") or \
            export_version(self.model.metadata)
        if self.prediction_log:
            self.prediction_log.model_version = self.version
            self.prediction_log.start()
        # metric children resolved once: label lookups would cost more than the encoding of a row
        self._outcomes = {(protocol, outcome): metrics.requests_total.labels(self.name, protocol, outcome)
                          for protocol in ("v1", "v2") for outcome in metrics.OUTCOMES}
        self._latency = {protocol: metrics.request_seconds.labels(self.name, protocol) for protocol in ("v1", "v2")}
        self._predictions = metrics.prediction.labels(self.name)
        self._rows = metrics.rows_total.labels(self.name)
        self._lookup = metrics.feature_lookup_seconds.labels(self.name)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        if self.prediction_log:
            self.prediction_log.close()

    def get_input_types(self) -> list[dict]:
        if isinstance(self.model, TensorModel):
            return self.model.describe()
        return self.model.contract.describe()

    def get_output_types(self) -> list[dict]:
        if isinstance(self.model, TensorModel):
            return [{"name": TENSOR_OUTPUT_NAME, "datatype": "FP32", "shape": [-1, -1]}]
        target = self.model.target
        if target.task == "multiclass":
            return [{"name": LABEL_OUTPUT_NAME, "datatype": "BYTES", "shape": [-1]},
                    {"name": PROBABILITIES_OUTPUT_NAME, "datatype": "FP64", "shape": [-1, target.outputs]}]
        return [{"name": VALUE_OUTPUT_NAME if target.task == "regression" else OUTPUT_NAME, "datatype": "FP64",
                 "shape": [-1]}]

    def v2_outputs(self, predictions: np.ndarray) -> list[InferOutput]:
        """The V2 output tensors of the task's predictions (see :meth:`get_output_types`)."""
        target = self.model.target
        if target.task == "multiclass":
            labels = [str(label) for label in target.decode(predictions).tolist()]
            return [InferOutput(LABEL_OUTPUT_NAME, [len(labels)], "BYTES", labels),
                    InferOutput(PROBABILITIES_OUTPUT_NAME, list(predictions.shape), "FP64", predictions.ravel().tolist())]
        name = VALUE_OUTPUT_NAME if target.task == "regression" else OUTPUT_NAME
        return [InferOutput(name, [len(predictions)], "FP64", predictions.tolist())]

    def v1_instances(self, payload: Any) -> Any:
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError('the body must be a JSON object {"instances": [{feature: value, ...}, ...]}')
        return payload["instances"]

    def v2_instances(self, request: InferRequest) -> list[dict[str, Any]]:
        for item in request.inputs:
            self.model.contract.check_datatype(item.name, item.datatype)
        columns = {item.name: _column(item.data, list(item.shape), item.name) for item in request.inputs}
        if not columns:
            raise RequestError("the request has no inputs; send one input tensor per feature")
        counts = {len(column) for column in columns.values()}
        if len(counts) > 1:
            raise RequestError(f"inputs have different row counts {sorted(counts)}; every input needs one value per row")
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        if not rows:
            raise RequestError("the inputs have no rows; send at least one value per input")
        return rows

    def checked_rows(self, instances: Any, protocol: str) -> list[dict[str, Any]]:
        """The request's rows checked against the model's feature schema (a RequestError names what is wrong)."""
        contract = self.model.contract
        if protocol == "v1":
            return contract.rows_from_instances(instances, self._extra_fields)
        for index, row in enumerate(instances):
            contract.check_row(row, f"row {index}", self._extra_fields)
        return instances

    def _within_domain(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows to score under the domain policy; values outside the training domain are counted."""
        rows, found = self.model.contract.guard(rows, self.domain_policy)
        for item in found:
            metrics.out_of_domain.labels(self.name, item.feature, item.kind).inc()
        return rows

    async def _enrich(self, rows: list[Any]) -> None:
        started = time.perf_counter()
        await self.feast.enrich(rows)
        self._lookup.observe(time.perf_counter() - started)

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        started = time.perf_counter()
        protocol = "v2" if isinstance(payload, InferRequest) else "v1"
        rid = request_id(headers, payload.id if protocol == "v2" else None)
        logs.set_trace_id(rid)  # this request's lines, and the server's for its 400 or 500, carry it
        if response_headers is not None:
            response_headers[REQUEST_ID_HEADER] = rid
        if isinstance(self.model, TensorModel):
            return self._predict_tensors(payload, protocol, started, rid)
        try:
            instances = self.v2_instances(payload) if protocol == "v2" else self.v1_instances(payload)
            if self.feast and isinstance(instances, list):
                await self._enrich(instances)
            rows = self._within_domain(self.checked_rows(instances, protocol))
            predictions = self.model.predict_rows(rows)
            _require_finite(predictions)
        except RequestError as error:
            self._outcomes[protocol, "rejected"].inc()
            raise InvalidInput(str(error)) from None
        except Exception:
            self._outcomes[protocol, "error"].inc()
            raise
        self._outcomes[protocol, "ok"].inc()
        self._rows.inc(len(rows))
        if self.model.target.task != "regression":  # the histogram's buckets are probabilities
            for value in answer_scores(self.model.target, predictions).tolist():
                self._predictions.observe(value)
        self._latency[protocol].observe(time.perf_counter() - started)
        if self.prediction_log:
            self.prediction_log.record(rid, rows, predictions)
        self._log_answer(protocol, len(rows), started)
        if protocol == "v1":
            return {"predictions": v1_predictions(self.model.target, predictions)}
        return InferResponse(response_id=rid, model_name=self.name, infer_outputs=self.v2_outputs(predictions))

    def _log_answer(self, protocol: str, rows: int, started: float) -> None:
        """One line per answered request (the request id is its trace.id)."""
        _LOG.info("200 %s predict: %d rows", protocol, rows, extra={
            "http.response.status_code": 200, "dmlops.rows": rows, "event.duration": logs.duration_ns(started),
            "labels.model_name": self.name, "labels.model_version": self.version, "labels.protocol": protocol})

    def _predict_tensors(self, payload: dict | InferRequest, protocol: str, started: float,
                         rid: str) -> dict | InferResponse:
        """A user's exported model: the request's input tensors in, the model's output rows out."""
        try:
            if protocol == "v2":
                for item in payload.inputs:
                    if item.datatype not in V2_DATATYPES:
                        raise RequestError(f"input {item.name!r}: datatype {item.datatype[:20]!r} is not a V2 datatype")
                arrays = self.model.arrays({
                    item.name: np.asarray(item.data.tolist() if isinstance(item.data, np.ndarray) else item.data)
                    .reshape(list(item.shape)) for item in payload.inputs
                })
            else:
                arrays = self.model.arrays_from_instances(self.v1_instances(payload))
        except (RequestError, ValueError) as error:  # ValueError: V2 data that does not fill its shape
            self._outcomes[protocol, "rejected"].inc()
            raise InvalidInput(str(error)) from None
        try:
            outputs = self.model.predict(arrays)
        except Exception:
            self._outcomes[protocol, "error"].inc()
            raise
        self._outcomes[protocol, "ok"].inc()
        self._rows.inc(len(outputs))
        self._latency[protocol].observe(time.perf_counter() - started)
        if self.prediction_log:
            self.prediction_log.record(rid, dict(zip(self.model.inputs, arrays)), outputs)
        self._log_answer(protocol, len(outputs), started)
        if protocol == "v1":
            return {"predictions": outputs.tolist()}
        output = InferOutput(TENSOR_OUTPUT_NAME, list(outputs.shape), "FP32", outputs.astype(np.float32).ravel().tolist())
        return InferResponse(response_id=rid, model_name=self.name, infer_outputs=[output])
