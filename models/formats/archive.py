"""Zip archives as PyTorch writes them (``torch.save``, ``torch.jit.save``, ``torch.export.save``).

All three put every member under one root folder (``{root}/data.pkl``, ``{root}/code/...``,
``{root}/models/model.json``). :class:`ZipMembers` reads the member list once, checks the
things an archive could use to show a checker one file and a loader another (two members
with the same name, absolute or ``..`` paths, more than one root), and answers questions
about names relative to the root.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from models.errors import InvalidModelFileError


@dataclass(frozen=True)
class ZipMembers:
    """The members of a PyTorch zip archive, relative to its single root folder."""

    path: Path
    root: str
    names: frozenset[str]

    @classmethod
    def read(cls, path: Path) -> ZipMembers:
        try:
            with zipfile.ZipFile(path) as zf:
                raw = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidModelFileError(
                f"the model file is not a readable zip archive: {exc}"
            ) from exc
        if not raw:
            raise InvalidModelFileError("the model file is an empty zip archive")
        duplicates = sorted(name for name, count in Counter(raw).items() if count > 1)
        if duplicates:
            # Python's zipfile and PyTorch's reader may pick different copies of a
            # duplicated member, so what we check would not be what torch loads.
            raise InvalidModelFileError(
                f"the archive has duplicated members: {duplicates[:5]}",
                {"duplicates": duplicates[:20]},
            )
        roots = set()
        relative = set()
        for name in raw:
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or len(parts) < 2:
                raise InvalidModelFileError(
                    f"the archive member {name!r} is not inside a root folder as PyTorch "
                    "archives are"
                )
            roots.add(parts[0])
            relative.add("/".join(parts[1:]))
        if len(roots) != 1:
            raise InvalidModelFileError(
                f"a PyTorch archive has one root folder; this one has {sorted(roots)[:5]}"
            )
        return cls(path=path, root=roots.pop(), names=frozenset(relative))

    def has(self, name: str) -> bool:
        return name in self.names

    def under(self, prefix: str) -> list[str]:
        return sorted(n for n in self.names if n.startswith(prefix))

    def read_member(self, name: str) -> bytes:
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(f"{self.root}/{name}")
