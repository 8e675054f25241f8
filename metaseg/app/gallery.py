"""What the gallery shows of each image: its size, a cached thumbnail, or why it cannot be read.

Each image is decoded once (upright, as ``metaseg adapt`` reads it); its size and thumbnail
(JPEG, at most ``THUMBNAIL_SIDE`` pixels a side) are kept in ``<workdir>/app/thumbnails/``
with an index keyed by the file's size and modification time, so a changed file is decoded
again and an unchanged one never is. An image that cannot be decoded is recorded with the
reason, which the page shows by name.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Dict, Optional

from PIL import Image

from metaseg.app.workdir import APP, WorkDir, read_json, stem, write_atomic, write_json
from metaseg.cli import folders
from metaseg.errors import DataError

THUMBNAIL_SIDE = 192
INDEX_FILE = "index.json"


class Gallery:
    """Image sizes, decode failures and thumbnails of one work directory's images."""

    def __init__(self, workdir: WorkDir):
        self.workdir = workdir
        self._folder = workdir.path(APP, "thumbnails")
        self._index_path = os.path.join(self._folder, INDEX_FILE)
        self._index: Dict[str, dict] = read_json(self._index_path, {})
        self._changed = False
        self._lock = threading.Lock()

    def thumbnail_path(self, name: str) -> str:
        return os.path.join(self._folder, stem(name) + ".jpg")

    def info(self, name: str, path: Optional[str] = None) -> dict:
        """{"width", "height", "error"} of image ``name`` (error None if it decodes).
        ``path``: its file, when the caller has it from ``WorkDir.listing`` (else looked up,
        which refuses names outside the folder). Call :meth:`save` after a batch of calls."""
        path = path or self.workdir.image_path(name)
        stat = os.stat(path)
        key = [stat.st_size, stat.st_mtime_ns]
        with self._lock:
            entry = self._index.get(name)
            if entry is not None and entry["key"] == key and (
                    entry["error"] or os.path.exists(self.thumbnail_path(name))):
                return entry
        entry = {"key": key, **self._make_thumbnail(name, path)}
        with self._lock:
            self._index[name] = entry
            self._changed = True
        return entry

    def save(self) -> None:
        """Write the index if :meth:`info` added to it."""
        with self._lock:
            if self._changed:
                write_json(self._index_path, self._index)
                self._changed = False

    def _make_thumbnail(self, name: str, path: str) -> dict:
        try:
            image = folders.decode_image(path)
        except DataError as e:
            return {"width": None, "height": None, "error": str(e)}
        thumb = Image.fromarray(image)
        thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR)
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=85)
        write_atomic(self.thumbnail_path(name), buffer.getvalue())
        return {"width": int(image.shape[1]), "height": int(image.shape[0]), "error": None}

    def size(self, name: str) -> Optional[tuple]:
        """(height, width) of a decodable image; DataError naming the file otherwise."""
        entry = self.info(name)
        self.save()
        if entry["error"]:
            raise DataError(entry["error"])
        return entry["height"], entry["width"]
