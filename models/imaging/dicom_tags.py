"""Typed reads of DICOM header values, each failure a domain error naming the tag.

A hostile or broken file can put anything in any element: ``RescaleSlope`` of ``abc``,
``NaN`` or ``1e308``, a ``NumberOfFrames`` of ``-3``, a ``LUTDescriptor`` with two values.
:class:`TagReader` is the one place such values are converted: a value that is missing
gets the caller's default, a value that cannot be converted, is not finite or is out of
range raises :class:`~models.errors.InvalidImageError` whose message and details name the
tag (keyword and ``(gggg,eeee)``) and never the value, which could be patient data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from models.errors import InvalidImageError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def tag_label(keyword: str) -> str:
    """``RescaleSlope (0028,1053)``: the keyword and its tag, for messages."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


class TagReader:
    """Reads one dataset (or sequence item) of the file ``name``; see the module docstring.

    ``where`` prefixes the tag in messages for sequence items (``VOILUTSequence[0] >``).
    """

    def __init__(self, ds: Dataset, name: str, filename: str | None, where: str = "") -> None:
        self.ds = ds
        self.name = name
        self.filename = filename
        self.where = where

    def error(self, keyword: str, problem: str) -> InvalidImageError:
        label = f"{self.where}{tag_label(keyword)}"
        return InvalidImageError(
            f"{self.name}: the DICOM element {label} {problem}",
            {"filename": self.filename, "tag": f"{self.where}{keyword}"},
        )

    def raw(self, keyword: str) -> Any:
        """The element's value (pydicom converts it on access), ``None`` when absent or empty."""
        try:
            if keyword not in self.ds:
                return None
            value = self.ds[keyword].value
        except Exception as exc:  # pydicom converts lazily and raises what it meets
            raise self.error(keyword, "cannot be read") from exc
        if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
            return None
        return value

    def values(self, keyword: str) -> list[Any]:
        """All values of a (possibly multi-valued) element; ``[]`` when absent."""
        value = self.raw(keyword)
        if value is None:
            return []
        if isinstance(value, (str, bytes, int, float)) or not isinstance(value, Sequence):
            return [value]
        return list(value)

    def number(self, keyword: str, default: float) -> float:
        """The first value as a finite float (a file may list several windows)."""
        found = self.values(keyword)
        if not found:
            return default
        return self._finite(keyword, found[0])

    def numbers(self, keyword: str, count: int) -> list[float]:
        """Exactly ``count`` finite values."""
        found = self.values(keyword)
        if len(found) != count:
            raise self.error(keyword, f"must hold {count} values, not {len(found)}")
        return [self._finite(keyword, v) for v in found]

    def integer(self, keyword: str, default: int, low: int, high: int) -> int:
        """The first value as an integer in ``[low, high]``."""
        found = self.values(keyword)
        if not found:
            return default
        return self._integer(keyword, found[0], low, high)

    def integers(self, keyword: str, count: int, low: int, high: int) -> list[int]:
        """Exactly ``count`` integers in ``[low, high]`` (a LUT descriptor)."""
        found = self.values(keyword)
        if len(found) != count:
            raise self.error(keyword, f"must hold {count} values, not {len(found)}")
        return [self._integer(keyword, v, low, high) for v in found]

    def text(self, keyword: str, default: str = "") -> str:
        """The first value as stripped text."""
        found = self.values(keyword)
        if not found:
            return default
        value = found[0]
        if isinstance(value, bytes):
            raise self.error(keyword, "is not text")
        return str(value).strip()

    def _finite(self, keyword: str, value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise self.error(keyword, "is not a number") from exc
        if not math.isfinite(number):
            raise self.error(keyword, "is not a finite number")
        return number

    def _integer(self, keyword: str, value: Any, low: int, high: int) -> int:
        number = self._finite(keyword, value)
        if number != int(number):
            raise self.error(keyword, "is not an integer")
        if not low <= int(number) <= high:
            raise self.error(keyword, f"must be in [{low}, {high}]")
        return int(number)
