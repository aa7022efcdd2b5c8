"""What a report records so that a re-run can be compared."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import torch

PACKAGES = ("robustdx", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "pydicom")


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_description(device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {"type": device.type, "python": platform.python_version(),
                           "machine": platform.machine(), "processor": platform.processor()}
    if device.type == "cuda":
        out["name"] = torch.cuda.get_device_name(device)
        out["cuda"] = torch.version.cuda
    else:
        out["threads"] = torch.get_num_threads()
    return out
