"""torch.export programs (``torch.export.save``, ``.pt2``).

Why loading one is safe here, and what it takes
-----------------------------------------------
An exported program is a JSON graph of registered operators plus raw tensor payloads; its
loader does not import or run Python from the file. But :func:`torch.export.load` (torch
2.14) still unpickles some members *without* ``weights_only``: payloads flagged
``use_pickle`` in the weights/constants configs (``torch.load(weights_only=False)``),
``opaque_obj_*`` constants (``pickle.loads``), the sample inputs when a ``weights_only``
load of them fails (it falls back to a full unpickle), and it loads AOTInductor shared
libraries from ``data/aotinductor/``. So before calling it, :func:`check_archive`:

- accepts only the members ``torch.export.save`` writes for a plain program: the format
  markers, ``models/*.json``, raw ``weight_*``/``tensor_*`` payloads and their configs,
  ``data/sample_inputs/*.pt`` and ``extra/*`` text; anything else (AOTInductor, ExecuTorch
  or MTIA payloads, custom or opaque objects, legacy ``.pt`` weights) is refused;
- loads every pickled member it will meet (``use_pickle`` payloads, the sample inputs)
  with ``torch.load(weights_only=True)`` first. When the restricted unpickler accepts a
  stream, the stream references only allow-listed tensor rebuilders, so the full unpickler
  torch later runs on the same bytes can do nothing more; when it refuses, so do we.

- checks the program's JSON (operator targets of every graph, nested graphs of higher-order
  operators included, guard code and symbolic expressions) against the operator allow-list
  without resolving any name (:mod:`models.formats.export_program`).

After loading, every node of the program's graph and of every nested graph module is
checked again by the operator it resolved to (:func:`loaded_operators`).

An exported module cannot change train/eval mode (``.eval()`` raises), and it is
specialised to the example batch size unless the batch dimension was marked dynamic:
:class:`ExportedNet` makes ``train()``/``eval()`` harmless and :func:`static_input_shape`
reports the shape the program was specialised to, so the loader can set
``DiagnosticModel.fixed_batch``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.errors import InvalidModelFileError, UnsafeModelFileError
from models.formats.archive import ZipMembers
from models.formats.export_program import HIGHER_ORDER, PYTHON_TARGETS, check_program_json
from models.formats.operators import check_operators, torch_op_name

_FIXED_MEMBERS = frozenset(
    {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
)
_ALLOWED = re.compile(
    r"^(models/[^/]+\.json"
    r"|data/weights/[^/]+_weights_config\.json"
    r"|data/weights/weight_[^/]+"
    r"|data/constants/[^/]+_constants_config\.json"
    r"|data/constants/tensor_[^/]+"
    r"|data/sample_inputs/[^/]+\.pt"
    r"|extra/.+)$"
)


class ExportedNet(nn.Module):
    """Holds the module of an exported program.

    Exported graphs fixed their train/eval behaviour when they were exported and raise on
    ``.eval()``; this wrapper records the mode without propagating it, so code that puts a
    :class:`~models.wrapper.DiagnosticModel` in eval mode (every attack does) works.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> ExportedNet:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> Any:
        return self.module(x)


def check_archive(path: Path) -> None:
    """Refuse a ``.pt2`` archive that would need more than tensors to load (see module doc)."""
    members = ZipMembers.read(path)
    unexpected = sorted(
        n for n in members.names if n not in _FIXED_MEMBERS and not _ALLOWED.match(n)
    )
    if unexpected:
        raise UnsafeModelFileError(
            "the torch.export archive has members a plain exported program does not have "
            f"(compiled code or pickled objects): {unexpected[:5]}; export the model with "
            "torch.export.export and save it with torch.export.save",
            {"members": unexpected[:20]},
        )
    if not members.has("archive_format") or members.read_member("archive_format").strip() != b"pt2":
        raise InvalidModelFileError("the archive_format member of the .pt2 archive is not 'pt2'")
    if not members.under("models/"):
        raise InvalidModelFileError("the .pt2 archive has no exported program (models/*.json)")
    for program_name in members.under("models/"):
        check_program_json(program_name, members.read_member(program_name))
    for config_name in members.under("data/weights/") + members.under("data/constants/"):
        if not config_name.endswith("_config.json"):
            continue
        folder = config_name.rsplit("/", 1)[0]
        for fqn, entry in _config_entries(members, config_name).items():
            if entry.get("use_pickle"):
                _check_tensor_pickle(members, f"{folder}/{entry.get('path_name', '')}", fqn)
    for sample in members.under("data/sample_inputs/"):
        _check_weights_only(members, sample, "sample inputs")


def load_exported(path: Path, device: torch.device) -> tuple[ExportedNet, tuple[Any, ...] | None]:
    """Load a checked ``.pt2``; returns the module and the input shape it was specialised to.

    The shape is ``(N, C, H, W)`` with ``None`` for dynamic dimensions, or ``None`` when the
    program does not take exactly one tensor input.
    """
    check_archive(path)
    try:
        with path.open("rb") as fh:
            program = torch.export.load(fh)
    except Exception as exc:  # torch raises many kinds on a malformed program
        raise InvalidModelFileError(f"torch.export.load could not read the program: {exc}") from exc
    check_operators(loaded_operators(program), "exported program")
    shape = static_input_shape(program)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    try:
        module = program.module()
    except Exception as exc:
        raise InvalidModelFileError(f"the exported program cannot be run: {exc}") from exc
    return ExportedNet(module).to(device), shape


def loaded_operators(program: torch.export.ExportedProgram) -> Iterator[str]:
    """The operator of every node of every graph in ``program`` (nested graph modules too).

    Operators are yielded as ``"namespace::name"``. Allowed control-flow operators and
    scalar Python functions are skipped; any other target is yielded by its Python name
    (``"builtins.open"``), and a node that is not a function call as ``"fx::<op>"``: both are
    outside the allow-list.
    """
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            if node.op != "call_function":
                yield f"fx::{node.op}"
                continue
            name = torch_op_name(node.target)
            if "::" in name:
                yield name
            elif isinstance(node.target, torch._ops.HigherOrderOperator):
                if node.target.name() not in HIGHER_ORDER:
                    yield f"higher_order::{node.target.name()}"
            elif _python_name(node.target) not in PYTHON_TARGETS:
                yield _python_name(node.target)


def _python_name(target: object) -> str:
    module = getattr(target, "__module__", None) or "?"
    module = {"operator": "_operator"}.get(module, module)
    return f"{module}.{getattr(target, '__name__', type(target).__name__)}"


def static_input_shape(program: torch.export.ExportedProgram) -> tuple[Any, ...] | None:
    """The user input's shape, with ``None`` where a dimension is dynamic (symbolic)."""
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [
        n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs
    ]
    if len(placeholders) != 1:
        return None
    value = placeholders[0].meta.get("val")
    if not isinstance(value, torch.Tensor):
        return None
    return tuple(d if isinstance(d, int) else None for d in value.shape)


def _config_entries(members: ZipMembers, name: str) -> dict[str, dict[str, Any]]:
    try:
        config = json.loads(members.read_member(name))
        entries = config["config"]
        if not isinstance(entries, dict):
            raise TypeError("config is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidModelFileError(
            f"the .pt2 member {name} is not a payload config: {exc}"
        ) from exc
    return {str(k): v for k, v in entries.items() if isinstance(v, dict)}


def _check_weights_only(members: ZipMembers, name: str, what: str) -> object:
    try:
        data = members.read_member(name)
    except KeyError as exc:
        raise InvalidModelFileError(f"the .pt2 archive lacks {name}") from exc
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFileError(
            f"the {what} in {name} are a pickle that needs more than tensors to load",
            {"member": name},
        ) from exc
    except Exception as exc:
        raise InvalidModelFileError(f"the {what} in {name} cannot be read: {exc}") from exc


def _check_tensor_pickle(members: ZipMembers, name: str, fqn: str) -> None:
    value = _check_weights_only(members, name, f"payload of {fqn!r}")
    if not isinstance(value, torch.Tensor):
        raise UnsafeModelFileError(
            f"the payload of {fqn!r} ({name}) is a pickled {type(value).__name__}, not a tensor",
            {"member": name},
        )
