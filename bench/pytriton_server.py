"""A real Triton Inference Server (PyTriton) serving one TorchScript model, for the
side-by-side bench and the remote-model tests. Runs in the side environment that
:mod:`bench.pytriton_side` builds (Debian's python3.11, which has the shared libpython that
PyTriton's Python backend needs), never in the service's own environment.

The TorchScript module takes ``image`` ``FP32 [N, C, H, W]`` in [0, 1] and returns
``probabilities`` ``FP32 [N, K]``; Triton's dynamic batcher groups requests into batches of
up to ``--max-batch`` images, waiting at most ``--queue-delay-us`` for one to fill.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="TorchScript file")
    parser.add_argument("--name", default="m")
    parser.add_argument("--shape", required=True, help="C,H,W of one image")
    parser.add_argument("--outputs", type=int, required=True, help="K probabilities")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    net = torch.jit.load(args.model).eval()
    shape = tuple(int(v) for v in args.shape.split(","))

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            probs = net(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
        return {"probabilities": probs.float().numpy()}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port,
                          grpc_address="127.0.0.1", grpc_port=args.grpc_port,
                          metrics_address="127.0.0.1", metrics_port=args.metrics_port,
                          exit_on_error=True)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name, infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.float32, shape=shape)],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(args.outputs,))],
            config=ModelConfig(max_batch_size=args.max_batch, batcher=DynamicBatcher(
                max_queue_delay_microseconds=args.queue_delay_us)),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
