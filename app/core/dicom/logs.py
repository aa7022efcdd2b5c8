"""Keep header values out of the logs.

pydicom reports a malformed value by quoting it, both as a warning and on its ``pydicom``
logger (``Invalid value for VR PN: 'DOE^JOHN'``); a malformed name or ID is patient data.
The filter installed here replaces every quoted part of pydicom's log messages.
"""

from __future__ import annotations

import logging
import re

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class WithholdValues(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = _QUOTED.sub("<value withheld>", message), None
        return True


FILTER = WithholdValues()


def install() -> None:
    logger = logging.getLogger("pydicom")
    if FILTER not in logger.filters:
        logger.addFilter(FILTER)
