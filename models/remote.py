"""A model behind an Open Inference Protocol v2 endpoint (KServe, Triton, RobustDx's own
``/v2``), as a score-only :class:`~models.wrapper.DiagnosticModel`.

:class:`RemoteNet` stands where a local network would: the wrapper normalizes pixels with
the card's mean and std, ``RemoteNet`` undoes that exactly, sends ``[N, C, H, W]`` FP32
pixels in [0, 1] to ``POST /v2/models/{name}/infer`` (binary tensor extension), and turns
the answer back into logits of the card's head, so score-based attacks and analyses
(Square, the perturbation benchmark, flip probability) run unchanged. It has no
gradients: its output does not depend on the input through autograd, so gradient attacks
must be refused before they start (the service does, at submission).

Every query is counted (images and HTTP requests) and bounded by a :class:`QueryBudget`:
at most ``limit`` images in all, at most ``rate`` images per second, sent in requests of at
most ``max_batch`` images.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx
import numpy as np
import torch
from torch import nn

from models.card import Head, ModelCard
from models.errors import QueryBudgetExceededError, RemoteModelError
from models.wrapper import DiagnosticModel

Outputs = Literal["probabilities", "logits"]
_EPS = 1e-7  # probabilities are clamped to [eps, 1 - eps] before taking logs


@dataclass
class QueryBudget:
    """Images an audit may send (``limit``), and how fast (``rate`` images/s, 0 = no cap)."""

    limit: int
    rate: float = 0.0
    queries: int = 0
    requests: int = 0
    seconds: float = 0.0  # spent waiting for the endpoint
    _next_at: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, images: int) -> None:
        """Reserve ``images`` queries, sleeping as long as the rate requires.

        Raises:
            QueryBudgetExceededError: the budget cannot cover them.
        """
        with self._lock:
            if self.queries + images > self.limit:
                raise QueryBudgetExceededError(
                    f"the audit's query budget of {self.limit} images is used up "
                    f"({self.queries} sent); raise options.query_budget or audit fewer images",
                    {"query_budget": self.limit, "queries": self.queries})
            self.queries += images
            self.requests += 1
            now = time.monotonic()
            start = max(now, self._next_at)
            if self.rate > 0:
                self._next_at = start + images / self.rate
        if start > now:
            time.sleep(start - now)

    def usage(self) -> dict[str, float]:
        return {"queries": self.queries, "requests": self.requests,
                "seconds": round(self.seconds, 4), "budget": self.limit, "rate": self.rate}


class Endpoint(Protocol):
    """What :class:`RemoteNet` needs of a client: FP32 ``[N, C, H, W]`` in, ``[N, K]`` out."""

    def infer(self, x: np.ndarray) -> np.ndarray: ...


class OipClient:
    """``POST {base}/v2/models/{name}[/versions/{v}]/infer`` with binary tensors; redirects
    are never followed (the URL was checked, its redirect target was not)."""

    def __init__(self, base_url: str, model: str, version: str | None = None,
                 token: str | None = None, *, input_name: str = "image",
                 output_name: str = "probabilities", timeout: float = 30.0) -> None:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self.model_url = base_url.rstrip("/") + path
        self.input_name, self.output_name = input_name, output_name
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(headers=headers, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def metadata(self) -> dict[str, Any]:
        response = self._send("GET", self.model_url)
        try:
            body = response.json()
        except ValueError as exc:
            raise RemoteModelError("the endpoint's model metadata is not JSON") from exc
        if not isinstance(body, dict):
            raise RemoteModelError("the endpoint's model metadata is not a JSON object")
        return body

    def infer(self, x: np.ndarray) -> np.ndarray:
        """``x``: FP32 ``[N, C, H, W]``; the output tensor as float32 ``[N, K]``."""
        raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
        header = json.dumps({
            "inputs": [{"name": self.input_name, "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": self.output_name, "parameters": {"binary_data": True}}],
        }).encode()
        response = self._send("POST", f"{self.model_url}/infer", content=header + raw, headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header))})
        return self._output(response, x.shape[0])

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteModelError(f"the remote model did not answer: {type(exc).__name__}") \
                from exc
        if response.status_code != 200:
            raise RemoteModelError(
                f"the remote model answered {response.status_code}: {_message(response)}",
                {"status": response.status_code})
        return response

    def _output(self, response: httpx.Response, n: int) -> np.ndarray:
        body = response.content
        length = response.headers.get("inference-header-content-length")
        try:
            size = int(length) if length is not None else len(body)
            head = json.loads(body[:size])
            (out,) = [o for o in head["outputs"] if o["name"] == self.output_name]
            shape = [int(v) for v in out["shape"]]
            binary_size = (out.get("parameters") or {}).get("binary_data_size")
            if binary_size is not None:
                array = _binary(out["datatype"], body[size:size + int(binary_size)])
            else:
                array = np.asarray(out["data"], dtype=np.float32)
            array = array.astype(np.float32).reshape(shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteModelError(f"the remote model's answer has no usable "
                                   f"{self.output_name!r} tensor") from exc
        if array.ndim != 2 or array.shape[0] != n:
            raise RemoteModelError(f"the remote model answered shape {list(array.shape)} for "
                                   f"{n} images; expected [{n}, K]")
        return array


def _binary(datatype: str, data: bytes) -> np.ndarray:
    dtypes = {"FP32": "<f4", "FP16": "<f2", "FP64": "<f8"}
    if datatype not in dtypes:
        raise ValueError(f"unsupported output datatype {datatype}")
    return np.frombuffer(data, dtype=dtypes[datatype])


def _message(response: httpx.Response) -> str:
    """The protocol's error message, shortened; never the raw body of a misbehaving peer."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return "no protocol error body"
    text = error if isinstance(error, str) else json.dumps(error)
    return text[:300]


class RemoteNet(nn.Module):
    """Normalized images in, head logits out, through an :class:`OipClient`.

    ``width`` is the remote output's K. With ``outputs="logits"`` it must be what the head
    expects; with ``"probabilities"`` they become logits: ``log p`` (softmax: the same
    probabilities back), ``logit p`` per finding (sigmoid), ``logit p`` of the second label
    (binary-logit, from ``[1 - p, p]`` or ``[p]``).
    """

    def __init__(self, client: Endpoint, card: ModelCard, head: Head, outputs: Outputs,
                 width: int, budget: QueryBudget, max_batch: int = 32) -> None:
        super().__init__()
        self.client, self.head, self.outputs, self.width = client, head, outputs, width
        self.budget, self.max_batch = budget, max_batch
        c = card.input.channels
        self.mean = torch.tensor(card.preprocessing.mean).expand(c).reshape(1, c, 1, 1)
        self.std = torch.tensor(card.preprocessing.std).expand(c).reshape(1, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = (x.detach().cpu().float() * self.std + self.mean).clamp(0, 1).numpy()
        rows = []
        for start in range(0, pixels.shape[0], self.max_batch):
            chunk = pixels[start:start + self.max_batch]
            self.budget.take(chunk.shape[0])
            t0 = time.perf_counter()
            try:
                rows.append(self.client.infer(chunk))
            finally:
                self.budget.seconds += time.perf_counter() - t0
        out = torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, self.width)
        if out.shape[1] != self.width:
            raise RemoteModelError(f"the remote model gave {out.shape[1]} outputs per image; "
                                   f"it was registered with {self.width}")
        return self._logits(out).to(x.device)

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        if self.outputs == "logits":
            return out
        p = out.clamp(_EPS, 1 - _EPS)
        if self.head == Head.SOFTMAX:
            return torch.log(p)
        if self.head == Head.BINARY_LOGIT:
            p = p[:, -1:]
        return torch.log(p) - torch.log1p(-p)


def remote_head(card: ModelCard, outputs: Outputs, width: int) -> Head:
    """The head a remote output of width ``width`` stands for, or an error saying why none.

    Raises:
        RemoteModelError: the width does not fit the card.
    """
    k = len(card.labels)
    if outputs == "logits":
        head = card.resolved_head(width)
        ok = width == card.expected_outputs(head)
    else:
        head = card.head or card.resolved_head(k)
        ok = width == k or (head == Head.BINARY_LOGIT and width == 1)
    if not ok:
        raise RemoteModelError(f"the remote model has {width} outputs per image, which does "
                               f"not fit the card's {k} labels ({outputs})")
    return head


def remote_model(client: Endpoint, card: ModelCard, outputs: Outputs, width: int,
                 budget: QueryBudget, max_batch: int = 32) -> DiagnosticModel:
    """A :class:`DiagnosticModel` whose network is the endpoint (eval mode, no gradients)."""
    head = remote_head(card, outputs, width)
    net = RemoteNet(client, card, head, outputs, width, budget, max_batch)
    return DiagnosticModel(net, card, head).eval()
