"""Dataset import (imagefolder, csv incl. ChestX-ray14, medmnist-npz, dicom) and loading.

- :func:`import_dataset` checks an uploaded archive (zip slip, zip bombs, file count),
  reads its labels (streamed), decodes every image with the predict path's decoder under
  the import's limits and writes the canonical dataset folder; refused archives leave
  nothing behind. Bad images are listed by name: the import is refused, or with
  ``on_bad_files="skip"`` they are left out and recorded.
- :func:`load_dataset` gives a :class:`StoredDataset` whose ``tensors(card, indices)``
  returns model inputs, labels in the card's order, and lesion masks; ``metadata()``
  the per-image group labels (sex, age band, view, manufacturer, body part, CSV columns).
- :func:`check_labels` refuses a dataset whose labels do not fit a model card.
"""

from models.datasets.store import StoredDataset, check_labels, import_dataset, load_dataset
from models.datasets.types import (
    FORMATS,
    ON_BAD_FILES,
    BadFile,
    DatasetInfo,
    ImportLimits,
    Manifest,
    ManifestItem,
    OnBadFiles,
)

__all__ = [
    "FORMATS",
    "ON_BAD_FILES",
    "BadFile",
    "DatasetInfo",
    "ImportLimits",
    "Manifest",
    "ManifestItem",
    "OnBadFiles",
    "StoredDataset",
    "check_labels",
    "import_dataset",
    "load_dataset",
]
