"""TorchServe handler of the oracle protocol: uint8 clips in, top-1 answers out.

A `.mar` holds this file, the fp16 weights and the model card; the code (protocol, zoo architectures)
comes from the installed `vaas` package, which TorchServe's Python environment shares with the API
and the worker, so there is one copy of the architectures and of the protocol.

Per-request errors: TorchServe hands the handler a batch of requests merged from several clients.
A bad body must fail ITS request only, so instead of raising (a PredictionException fails every
request of the batch with one code) the handler sets that request's status with
`context.set_response_status(400, …, idx)` and answers it a JSON error, while the others are served.

TorchServe requires exactly one class defined in this module (model_loader._get_class_entry_point).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.memory import keep_freed_memory
from model_server import protocol, zoo

logger = logging.getLogger(__name__)

JSON = "application/json"
FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded")


class OracleHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context: Any) -> None:
        """Load the architecture named in model-config.yaml with the weights shipped in the .mar."""
        model_dir = Path(context.system_properties["model_dir"])
        options = (context.model_yaml_config or {}).get("handler", {})
        self.memory_kept = keep_freed_memory()
        self.name: str = options["model"]
        self.max_clips: int = int(options.get("max_clips", 48))
        self.chunk: int = int(options.get("chunk", 48))  # clips per forward: bounds activation memory
        gpu_id = context.system_properties.get("gpu_id")
        cuda = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if cuda else "cpu")
        self.card: dict = zoo.load_card(self.name, model_dir)
        self.labels: list[str] = list(self.card["labels"])
        self.frame_shape = zoo.entry(self.name).input.frame_shape
        self.model = zoo.load_trained(self.name, model_dir, self.device)
        self.initialized = True
        logger.info(
            "loaded %s on %s (max_clips=%d, torch threads=%d, freed memory kept: %s)",
            self.name,
            self.device,
            self.max_clips,
            torch.get_num_threads(),
            self.memory_kept,
        )

    def describe_handle(self) -> str:
        """The customized metadata of `GET /models/{name}?customized=true` (read by client.describe)."""
        return json.dumps(
            {
                "model": self.name,
                "labels": self.labels,
                "input": self.card["input"],
                "max_clips": self.max_clips,
                "accuracy": self.card.get("accuracy"),
                "kernels": zoo.kernels(self.device),
            }
        )

    def handle(self, data: list[dict], context: Any) -> list[str]:
        if context.get_request_header(0, "describe") == "True":
            return [self.describe_handle()]
        decoded: list[np.ndarray | None] = []
        replies: list[str] = []
        for idx, row in enumerate(data):
            context.set_response_content_type(idx, JSON)
            try:
                _refuse_forms(context, idx)
                decoded.append(protocol.decode_batch(_body(row), self.frame_shape, self.max_clips))
                replies.append("")
            except protocol.ProtocolError as exc:
                decoded.append(None)
                replies.append(_error(context, idx, 400, "BadRequest", str(exc)))
            except Exception as exc:
                logger.exception("unexpected error decoding request %d", idx)
                decoded.append(None)
                replies.append(
                    _error(context, idx, 500, "InternalServerError", f"{type(exc).__name__}: {exc}")
                )
        # Each request is forwarded on its own, never concatenated with the others TorchServe merged
        # into this batch: a convolution's last float digits depend on the batch it runs in, so a job's
        # answers would depend on which other jobs happened to be running, and the same seed would no
        # longer give the same queries. On a CPU this costs nothing measurable (see BENCHMARKS.md).
        for idx, clips in enumerate(decoded):
            if clips is not None:
                replies[idx] = json.dumps(self._predict(clips))
        return replies

    @torch.inference_mode()
    def _predict(self, clips: np.ndarray) -> list[protocol.Prediction]:
        """Top-1 label and probability of every clip, `self.chunk` clips per forward."""
        answers: list[protocol.Prediction] = []
        for start in range(0, len(clips), self.chunk):
            logits = self.model(zoo.to_model_input(clips[start : start + self.chunk], self.device))
            probability, label = torch.softmax(logits.float(), dim=1).max(dim=1)
            for p, k in zip(probability.tolist(), label.tolist(), strict=True):
                answers.append(protocol.Prediction(label=k, label_name=self.labels[k], probability=p))
        return answers


def _error(context: Any, idx: int, code: int, kind: str, message: str) -> str:
    """Set request `idx`'s status and return its JSON error body (TorchServe's own error shape)."""
    context.set_response_status(code, "Bad Request" if code == 400 else "Internal Server Error", idx)
    return json.dumps({"code": code, "type": kind, "message": message}, ensure_ascii=False)


def _refuse_forms(context: Any, idx: int) -> None:
    """TorchServe turns each part of a form into a field of its own: a clip must be the raw body."""
    content_type = (
        context.get_request_header(idx, "Content-Type") or context.get_request_header(idx, "content-type")
    )
    if content_type and content_type.strip().lower().startswith(FORM_TYPES):
        raise protocol.ProtocolError(
            f"send the .npy as the raw request body with Content-Type: application/octet-stream, "
            f"not as a form ({content_type.split(';')[0]})"
        )


def _body(row: dict) -> bytes:
    """The raw request bytes. TorchServe decodes JSON and text/* bodies itself; those are not .npy."""
    body = row.get("body")
    if body is None:
        body = row.get("data")
    if body is None:
        return b""
    if not isinstance(body, (bytes, bytearray)):
        raise protocol.ProtocolError(
            "body must be raw .npy bytes sent with Content-Type: application/octet-stream"
        )
    return bytes(body)
