"""``python -m dmlops.serving --model_dir DIR --model_name NAME``: serve an exported dmlops model.

Takes every ``kserve.ModelServer`` option (``--http_port``, ``--workers``, ...) plus the ones below. In a
KServe ServingRuntime the storage initializer puts the model in ``/mnt/models``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kserve.model_server import parser as kserve_parser

from dmlops.platform import logs
from dmlops.serving.prediction_log import PredictionLog
from dmlops.serving.predictor import DmlopsModel, FeastEnrichment
from dmlops.serving.server import DEFAULT_MAX_BODY_BYTES, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dmlops.serving", parents=[kserve_parser],
                                     description="Serve an exported dmlops model with kserve.ModelServer.")
    parser.add_argument("--model_dir", default="/mnt/models", help="exported model directory or URI")
    parser.add_argument("--model_format", default="", choices=["", "native", "onnx"],
                        help="native (torch.export program or SavedModel, the default) or onnx")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the model runtime")
    parser.add_argument("--feast_config", default="",
                        help="JSON (or a path to a JSON file) with store, features and entity_keys")
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--host", default="0.0.0.0", help="address the HTTP listener binds")
    parser.add_argument("--domain_policy", default="flag", choices=["flag", "clip", "reject"],
                        help="values outside a feature's training domain: score and count them (flag), clip "
                             "numeric ones into the training range (clip) or answer 400 (reject)")
    parser.add_argument("--prediction_log", default="",
                        help="folder or URI (gs://, s3://) to log every prediction to as hourly Parquet")
    parser.add_argument("--prediction_log_buffer_rows", type=int, default=100_000,
                        help="rows the prediction log holds in memory at most; beyond, rows are dropped and counted")
    parser.add_argument("--prediction_log_flush_seconds", type=float, default=10.0,
                        help="the prediction log writes a file at least this often (sooner when a batch fills)")
    parser.add_argument("--model_version", default="",
                        help="the version logged with each prediction (default: a digest of the model's files)")
    return parser


def feast_config(text: str) -> FeastEnrichment | None:
    if not text:
        return None
    source = Path(text)
    data = json.loads(source.read_text() if not text.lstrip().startswith("{") and source.is_file() else text)
    return FeastEnrichment.from_dict(data)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure(args.model_name, labels={"model_name": args.model_name})
    model = DmlopsModel(
        args.model_name, args.model_dir, model_format=args.model_format, threads=args.threads,
        feast=feast_config(args.feast_config), domain_policy=args.domain_policy,
        prediction_log=PredictionLog(args.prediction_log, model_name=args.model_name, model_version=args.model_version,
                                     max_buffered_rows=args.prediction_log_buffer_rows,
                                     flush_seconds=args.prediction_log_flush_seconds) if args.prediction_log else None,
    )
    serve(
        [model], http_port=args.http_port, host=args.host, max_body_bytes=args.max_body_bytes,
        enable_grpc=args.enable_grpc, grpc_port=args.grpc_port, workers=args.workers,
    )


if __name__ == "__main__":
    main()
