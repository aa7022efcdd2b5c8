"""Dataset import (imagefolder, csv incl. ChestX-ray14, medmnist-npz, dicom) and loading.

- :func:`import_dataset` checks an uploaded archive (zip slip, zip bombs, file count),
  reads its labels, decodes every image with the predict path's decoder and writes the
  canonical dataset folder; refused archives leave nothing behind.
- :func:`load_dataset` gives a :class:`StoredDataset` whose ``tensors(card, indices)``
  returns model inputs, labels in the card's order, and lesion masks.
- :func:`check_labels` refuses a dataset whose labels do not fit a model card.
"""

from models.datasets.store import StoredDataset, check_labels, import_dataset, load_dataset
from models.datasets.types import FORMATS, DatasetInfo, ImportLimits, Manifest, ManifestItem

__all__ = [
    "FORMATS",
    "DatasetInfo",
    "ImportLimits",
    "Manifest",
    "ManifestItem",
    "StoredDataset",
    "check_labels",
    "import_dataset",
    "load_dataset",
]
