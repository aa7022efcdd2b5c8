"""Model file formats: detection by content, one module per format, and exports.

Use :mod:`models.loading` for the public entry points; the modules here are the pieces.
"""

from models.formats.detect import EXTENSIONS, FORMATS, WEIGHT_FORMATS, ModelFormat, detect_format

__all__ = ["EXTENSIONS", "FORMATS", "WEIGHT_FORMATS", "ModelFormat", "detect_format"]
