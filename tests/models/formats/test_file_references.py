"""No model format can name a file: safetensors headers and archive members."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from models.errors import InvalidModelFileError, UnsafeModelFileError
from models.loading import load_model
from tests.models.model_files import (
    architecture_state,
    make_card,
    tiny_net,
    write_export,
    write_safetensors,
    write_torchscript,
)

CPU = torch.device("cpu")


def _relabel_header(src: Path, dest: Path, edit) -> Path:
    raw = src.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    dest.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])
    return dest


def test_safetensors_metadata_naming_a_path_is_only_text(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x01" * 64)
    good = write_safetensors(architecture_state(), tmp_path / "w.safetensors")
    named = _relabel_header(
        good,
        tmp_path / "named.safetensors",
        lambda h: h.setdefault("__metadata__", {}).update(
            {"location": str(secret), "external_data": "../secret.bin"}
        ),
    )
    loaded = load_model(named, make_card(architecture="small_cnn"), device=CPU)
    for key, value in architecture_state().items():
        torch.testing.assert_close(loaded.model.net.state_dict()[key], value)


def test_safetensors_with_a_lying_header_is_refused(tmp_path: Path) -> None:
    good = write_safetensors(architecture_state(), tmp_path / "w.safetensors")

    def lie(header: dict) -> None:
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"] = [0, 1 << 40]

    liar = _relabel_header(good, tmp_path / "liar.safetensors", lie)
    with pytest.raises(InvalidModelFileError, match="safetensors"):
        load_model(liar, make_card(architecture="small_cnn"), device=CPU)
    load_model(good, make_card(architecture="small_cnn"), device=CPU)


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export"])
def test_archives_with_members_their_writer_does_not_write_are_refused(
    tmp_path: Path, fmt: str
) -> None:
    if fmt == "torchscript":
        good = write_torchscript(tiny_net(), tmp_path / "m.pt")
    else:
        good = write_export(tiny_net(), tmp_path / "m.pt2")
    evil = tmp_path / f"evil{good.suffix}"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        zout.writestr(f"{root}/links/secret", b"/etc/passwd")
    with pytest.raises(UnsafeModelFileError, match="links/secret"):
        load_model(evil, make_card(), device=CPU)
    assert load_model(good, make_card(), device=CPU).format == fmt
