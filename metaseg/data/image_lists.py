"""Folders of image files, image-list files and reproducible labelled fractions.

An image is named by its *key*: its path relative to the folder being read, without the
extension, with ``/`` separators (``2007_000032`` in a flat folder such as VOC's
``JPEGImages``, ``abacus/1`` in FSS-1000's ``<class>/<n>.jpg`` layout).

An image-list file (``--image_list``) names one image per line. Only the first
whitespace-separated token of a line counts, so lists that pair an image with its mask
(``JPEGImages/x.jpg SegmentationClassAug/x.png``) work as they are; its extension is
dropped; blank lines and ``#`` comments are ignored. A list entry selects an image when
one of the two ends with the other, in whole path components: ``JPEGImages/2007_000032``
selects the key ``2007_000032``; ``abacus/1`` selects ``abacus/1`` but not ``bus/1``; a
bare ``1`` would select the ``1`` of every FSS-1000 class, so lists written by
``make_fraction_list.py`` use full keys.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence

import numpy as np
from absl import logging

from metaseg.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def image_key(relative_path: str) -> str:
    """``a/b/c.jpg`` -> ``a/b/c`` (``os.sep`` becomes ``/``)."""
    return os.path.splitext(relative_path)[0].replace(os.sep, "/")


def find_images(input_dir: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
    """Every file under ``input_dir`` (recursively) whose extension is in ``extensions``
    (case-insensitive), as paths relative to ``input_dir``, sorted; hidden entries skipped.

    Raises DataError if ``input_dir`` is not a directory.
    """
    if not os.path.isdir(input_dir):
        raise DataError(f"input directory {input_dir} does not exist; pass --input_dir "
                        "pointing at a folder of images")
    wanted = tuple(e.lower() for e in extensions)
    found = []
    for root, dirs, files in os.walk(input_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(wanted):
                found.append(os.path.relpath(os.path.join(root, name), input_dir))
    return sorted(found, key=image_key)


class ImageList:
    """The images an image-list file selects (see the module docstring for the rules)."""

    def __init__(self, entries: Iterable[str], source: str = "<list>"):
        self.source = source
        self.entries = tuple(dict.fromkeys(e.strip("/") for e in entries if e.strip("/")))
        if not self.entries:
            raise DataError(f"image list {source} names no images; put one image per line")
        self._entry_set = set(self.entries)
        self._suffixes = {}  # every trailing part of every entry -> the entries
        for entry in self.entries:
            parts = entry.split("/")
            for i in range(len(parts)):
                self._suffixes.setdefault("/".join(parts[i:]), set()).add(entry)
        self._used: set = set()

    @classmethod
    def read(cls, path: str) -> "ImageList":
        """Parse an image-list file; DataError if it cannot be read or names nothing."""
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise DataError(f"cannot read image list {path}: {e.strerror}; check "
                            "--image_list") from None
        tokens = (line.split()[0] for line in lines if line.strip()
                  and not line.lstrip().startswith("#"))
        return cls((image_key(t) for t in tokens), source=path)

    def __contains__(self, key: str) -> bool:
        """True when the key ends with an entry, or an entry ends with the key (whole
        path components either way)."""
        matched = set(self._suffixes.get(key, ()))  # entries ending with the key
        parts = key.split("/")
        matched.update("/".join(parts[i:]) for i in range(1, len(parts))
                       if "/".join(parts[i:]) in self._entry_set)  # the key ends with them
        self._used.update(matched)
        return bool(matched)

    def select(self, keys: Sequence[str], what: str = "images") -> List[str]:
        """The keys this list selects, in order; DataError if none (warns about unused
        entries, which usually mean a list written for another folder)."""
        chosen = [k for k in keys if k in self]
        if not chosen:
            raise DataError(f"image list {self.source} selects none of the {len(keys)} {what}; "
                            f"its first entry is {self.entries[0]!r}, the first {what[:-1]} "
                            f"{keys[0] if keys else 'none'!r}; check --image_list")
        self.warn_unused()
        return chosen

    def warn_unused(self) -> None:
        unused = [e for e in self.entries if e not in self._used]
        if unused:
            logging.warning("%d of %d entries of image list %s matched no image (first: %s)",
                            len(unused), len(self.entries), self.source, unused[0])


def maybe_read(path: Optional[str]) -> Optional[ImageList]:
    """``ImageList.read(path)``, or None without a path."""
    return ImageList.read(path) if path else None


def fraction_of(keys: Sequence[str], fraction: float, seed: int) -> List[str]:
    """A reproducible ``fraction`` of ``keys``: ``max(1, round(fraction * n))`` of them.

    The choice depends only on the set of keys, the fraction and the seed (keys are sorted
    before a seeded permutation), and the result is sorted. Larger fractions with the same
    seed give supersets of smaller ones, so 5 % labelled images stay inside the 10 %.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--fraction must be in (0, 1], got {fraction}")
    unique = sorted(set(keys))
    if not unique:
        raise DataError("no images to draw a fraction from")
    count = max(1, int(round(fraction * len(unique))))
    order = np.random.default_rng(seed).permutation(len(unique))
    return sorted(unique[i] for i in order[:count])
