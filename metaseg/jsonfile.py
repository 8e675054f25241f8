"""Reading the JSON files metaseg keeps or is given, with one-line errors.

The one reader: a configuration, a preset's metadata, a calibration fit, an annotation
export, COCO's annotations and the app's state files all come through :func:`read_json`, so
an unreadable file, a file that is not JSON and a file that holds no JSON object are said the
same way everywhere, naming the file and what to do. (Writing is
``metaseg.checkpoints.config_file.write_json``: atomic, through a temporary name.)
"""

from __future__ import annotations

import json
from typing import Type

from metaseg.errors import DataError, MetasegError


def read_json(path: str, fix: str, error: Type[MetasegError] = DataError, *,
              require_object: bool = True):
    """The JSON value in ``path`` (a dict unless ``require_object=False``).

    ``error(one line)`` when the file cannot be read, is not JSON, or (``require_object``)
    holds something other than an object; the line names ``path`` and ends with ``fix``
    (what the user should do, e.g. ``"re-export it"``)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror or e}); {fix}") from None
    except ValueError as e:
        raise error(f"{path} is not valid JSON ({e}); {fix}") from None
    if require_object and not isinstance(value, dict):
        raise error(f"{path} is not a JSON object; {fix}")
    return value
