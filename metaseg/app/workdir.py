"""The app's work directory: the user's labels, the predictions, the adapted model, settings.

The layout is the one ``metaseg adapt --output`` writes, plus the labels as a ``--support``
folder, so the command line and the app continue each other's work::

    <workdir>/masks/<stem>.png        predicted masks, uint8 0/255 at each image's size
    <workdir>/overlays/<stem>.png     the predictions tinted over their images
    <workdir>/model/                  the adapted model, config.json and adaptation.json
    <workdir>/support/images/<name>   labelled images (copies) ...
    <workdir>/support/masks/<stem>.png  ... and their masks: a --support folder
    <workdir>/app/                    the app's own files: settings.json, confidence.json,
                                      thumbnails/, tmp/ (scratch, emptied at start)

Image names are the plain file names of the images folder; any other name (a path, ``..``,
a hidden file, a file that is not there) is refused, so no request reaches outside the work
and images folders. Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import threading
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from metaseg import jsonfile
from metaseg.checkpoints import ADAPTATION_FILE, ADAPTED_SUBDIR
from metaseg.cli import folders
from metaseg.errors import DataError, MetasegError

MASKS, OVERLAYS, SUPPORT, APP = "masks", "overlays", "support", "app"
SETTINGS_FILE, CONFIDENCE_FILE = "settings.json", "confidence.json"


class Refused(MetasegError):
    """A request naming something outside the images folder (HTTP 400)."""


class NotFound(MetasegError):
    """A request for an image, mask or prediction that does not exist (HTTP 404)."""


def stem(name: str) -> str:
    return os.path.splitext(name)[0]


def is_plain_name(name: str) -> bool:
    """A file name with no folder part, not hidden, no control characters (no "..", "/")."""
    return (bool(name) and name == os.path.basename(name) and "\\" not in name
            and not name.startswith(".") and all(ord(c) >= 32 for c in name))


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def read_json(path: str, default):
    """The JSON value in one of the app's files, ``default`` if there is none yet."""
    if not os.path.exists(path):
        return default
    return jsonfile.read_json(path, "delete it to reset that part of the app's state",
                              require_object=False)


def write_json(path: str, value) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True).encode("utf-8"))


def decode_mask_upload(body: bytes, image_hw: Tuple[int, int], name: str) -> np.ndarray:
    """An uploaded mask: PNG bytes -> uint8 [H, W] 0/255 at exactly the image's size."""
    try:
        with Image.open(io.BytesIO(body)) as img:
            fmt = img.format
            mask = np.asarray(img.convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"the mask for {name} is not an image PNG can decode "
                        f"({' '.join(str(e).split()) or type(e).__name__})") from None
    if fmt != "PNG":
        raise DataError(f"the mask for {name} is a {fmt} file; upload a PNG (lossy formats "
                        "blur the 0/255 edges)")
    (h, w), (height, width) = mask.shape, image_hw
    if (h, w) != (height, width):
        raise DataError(f"the mask for {name} is {w}x{h} pixels but the image is "
                        f"{width}x{height}; save the mask at the image's size")
    return folders.check_mask(mask, image_hw, f"for {name}")


class WorkDir:
    """One work directory and the images folder it labels."""

    def __init__(self, root: str, images: str):
        self.root = os.path.abspath(root)
        self.images = os.path.abspath(images)
        self.lock = threading.Lock()  # label writes vs. reading the support set

    # -- folders -----------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def support(self) -> str:
        return self.path(SUPPORT)

    @property
    def model(self) -> str:
        return self.path(ADAPTED_SUBDIR)

    def prepare(self) -> None:
        """Create the folders, empty the scratch folder, drop half-made labels."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise DataError(f"--workdir {self.root} exists and is not a folder")
        if not os.path.isdir(self.images):
            raise DataError(f"--images folder {self.images} does not exist or is not a folder")
        for sub in ((SUPPORT, "images"), (SUPPORT, "masks"), (APP, "thumbnails")):
            os.makedirs(self.path(*sub), exist_ok=True)
        shutil.rmtree(self.path(APP, "tmp"), ignore_errors=True)
        masks = {stem(n) for n in os.listdir(self.path(SUPPORT, "masks"))}
        for name in os.listdir(self.path(SUPPORT, "images")):  # a crash between two writes
            if stem(name) not in masks:
                os.remove(self.path(SUPPORT, "images", name))

    def scratch(self) -> str:
        """A new empty folder under app/tmp/ (same file system, so renames are atomic)."""
        os.makedirs(self.path(APP, "tmp"), exist_ok=True)
        return tempfile.mkdtemp(dir=self.path(APP, "tmp"))

    # -- names -------------------------------------------------------------------------
    def listing(self) -> Tuple[List[str], List[Dict[str, str]]]:
        """(image names, problems [{name, reason}]) of the images folder; two images of one
        stem would share a mask file, so both are set aside as a problem."""
        paths = folders.image_files(self.images, "--images")
        names = [os.path.basename(p) for p in paths]
        stems = [stem(n) for n in names]
        problems = [{"name": n, "reason": f"shares the name stem {s!r} with another image, so "
                     "their masks would be one file; rename one of them"}
                    for n, s in zip(names, stems) if stems.count(s) > 1]
        clashing = {p["name"] for p in problems}
        return [n for n in names if n not in clashing], problems

    def image_path(self, name: str) -> str:
        """The file of image ``name``; Refused for anything but a plain listed file name."""
        if not is_plain_name(name):
            raise Refused(f"refused image name {name!r}: images are named by their plain file "
                          f"name in {self.images}")
        names, _ = self.listing()  # plain files listed in the folder, nothing else
        if name not in names:
            raise NotFound(f"no image {name!r} in {self.images}")
        return os.path.join(self.images, name)

    def new_image_path(self, name: str) -> str:
        """Where an uploaded image ``name`` goes; Refused for a bad or taken name."""
        if not is_plain_name(name) or not name.lower().endswith(folders.IMAGE_EXTENSIONS):
            raise Refused(f"refused image name {name!r}: give a plain file name ending in "
                          f"{', '.join(folders.IMAGE_EXTENSIONS)}")
        names, _ = self.listing()
        if any(stem(n) == stem(name) for n in names) or os.path.exists(
                os.path.join(self.images, name)):
            raise Refused(f"an image named {stem(name)!r} is already in {self.images}; "
                          "rename the upload")
        return os.path.join(self.images, name)

    # -- labels (the support set) --------------------------------------------------------
    def label_path(self, name: str) -> str:
        return self.path(SUPPORT, "masks", stem(name) + ".png")

    def labelled(self) -> set:
        """Names of the images with a saved mask."""
        return {n for n in os.listdir(self.path(SUPPORT, "images"))
                if os.path.exists(self.label_path(n))}

    def save_label(self, name: str, mask: np.ndarray) -> None:
        """Store mask uint8 [H, W] 0/255 as the label of image ``name`` (a support pair)."""
        source = self.image_path(name)
        with open(source, "rb") as f:
            image_bytes = f.read()
        with self.lock:  # the image first: a crash leaves a lonely image, removed at start
            write_atomic(self.path(SUPPORT, "images", name), image_bytes)
            write_atomic(self.label_path(name), png_bytes(mask))

    def delete_label(self, name: str) -> None:
        self.image_path(name)
        if not os.path.exists(self.label_path(name)):
            raise NotFound(f"image {name!r} has no mask to delete")
        with self.lock:
            os.remove(self.label_path(name))
            copy = self.path(SUPPORT, "images", name)
            if os.path.exists(copy):
                os.remove(copy)

    # -- predictions ---------------------------------------------------------------------
    def prediction_path(self, name: str) -> str:
        return self.path(MASKS, stem(name) + ".png")

    def confidence(self) -> Dict[str, float]:
        """{image name: mask confidence} of the current predictions."""
        return read_json(self.path(APP, CONFIDENCE_FILE), {})

    def adaptation(self) -> Optional[dict]:
        """adaptation.json of the adapted model, None before the first adaptation."""
        return read_json(os.path.join(self.model, ADAPTATION_FILE), None)



def stored_settings(root: str) -> dict:
    """What the app last ran with in work directory ``root`` ({"images", "init"})."""
    return read_json(os.path.join(root, APP, SETTINGS_FILE), {})


def store_settings(root: str, settings: dict) -> None:
    write_json(os.path.join(root, APP, SETTINGS_FILE), settings)
