"""Seeded random streams of the defense loop: every stream is derived from ``(seed, epoch,
stream)``, so a run resumed after epoch ``k`` continues as an uninterrupted run would."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class GlobalRng:
    """Fork the global torch RNG (dropout, stochastic depth) and seed it; the caller's
    global state is restored on exit."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.device = device
        self.seed = seed
        self._fork: Any = None

    def __enter__(self) -> None:
        cuda = self.device.type == "cuda"
        index = self.device.index if self.device.index is not None else 0
        devices = [index] if cuda else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.random.default_generator.manual_seed(self.seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        self._fork.__exit__(*exc)
