"""Writing a loaded model back out (downloads of hardened models).

Both exports hold the raw network (``model.net``), which takes *normalized* images; with
the same card, a re-upload gives the same :class:`~models.wrapper.DiagnosticModel`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from models.errors import ConflictError
from models.formats.torchscript import DEPRECATION
from models.wrapper import DiagnosticModel


def export_safetensors(model: DiagnosticModel, dest: Path) -> None:
    """``model.net.state_dict()`` as safetensors (tensors copied to the CPU, contiguous)."""
    from safetensors.torch import save_file

    # safetensors refuses tensors that share storage; a copy of each breaks the sharing.
    state = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in model.net.state_dict().items()
    }
    metadata = {"format": "pt", "architecture": str(model.card.architecture)}
    save_file(state, str(dest), metadata=metadata)


def export_torchscript(model: DiagnosticModel, dest: Path) -> None:
    """``model.net`` as TorchScript: scripted when it scripts, else traced at the card's size.

    Tracing uses the batch size the network accepts (``fixed_batch``, else 2).
    """
    net = model.net
    was_training = net.training
    net.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATION, category=FutureWarning)
            scripted: torch.jit.ScriptModule
            try:
                scripted = torch.jit.script(net)
            except Exception:  # not scriptable (exported or converted graphs): trace it
                c, h, w = model.input_shape
                example = torch.rand(
                    model.fixed_batch or 2, c, h, w, generator=torch.Generator().manual_seed(0)
                ).to(model.device)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                try:
                    scripted = torch.jit.trace(net, model.normalize(example), check_trace=False)
                except Exception as exc:
                    raise ConflictError(
                        f"the model cannot be converted to TorchScript: {exc}"
                    ) from exc
            torch.jit.save(scripted, str(dest))
    finally:
        net.train(was_training)
