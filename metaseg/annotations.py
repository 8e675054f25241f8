"""Annotation exports read as support sets: COCO JSON, LabelMe JSON, CVAT segmentation masks.

One category of an export (``--category NAME``) becomes binary support masks, the same
(image, mask) pairs a folder of image/mask files gives (``metaseg.cli.folders`` decodes,
checks and resizes both through one path; EXIF orientation as ``image_io.open_image``).

- **COCO** instances JSON (``--support x.json``): an image's mask is the union of its
  annotations of the category, polygons and RLE (compressed or not, crowd included),
  decoded by pycocotools as the COCO builder does (``metaseg.datasets.coco``). ``file_name``
  is looked up relative to ``--support_images DIR`` if given, else beside the JSON, in
  ``images/`` beside it and, for ``annotations/instances_NAME.json``, in ``../images``,
  ``../images/NAME`` and ``../NAME``.
- **LabelMe** (a folder of ``.json`` files): the image is the embedded ``imageData`` if
  present (as LabelMe itself loads it), else ``imagePath`` relative to the JSON (or its file
  name in ``--support_images``); ``polygon``, ``rectangle`` and ``circle`` shapes of the
  label are drawn as LabelMe's own ``shape_to_mask`` draws them (PIL, outline included);
  ``mask`` shapes (LabelMe >= 5.3: ``mask`` a base64 PNG of the box's pixels, ``points``
  the box's top-left and bottom-right pixels, both included) are pasted into the box as
  LabelMe's ``shapes_to_label`` does. ``line``, ``linestrip``, ``point`` and ``points``
  mark no area and are refused.
- **CVAT** "Segmentation mask 1.1" (a folder with ``labelmap.txt`` and
  ``SegmentationClass/``): the category's pixels are those of its ``labelmap.txt`` colour in
  ``SegmentationClass/NAME.png``; the names are those of ``ImageSets/Segmentation/*.txt``
  (else every mask), the images ``JPEGImages/NAME.*`` (written when exported with "Save
  images"), else ``--support_images DIR/NAME.*``.

Rules (each failure is one error naming the file): a vertex more than ``VERTEX_TOLERANCE``
pixel outside its image is refused, never clamped (within it, as COCO's rounding leaves,
the drawing clips it; LabelMe's canvas keeps points on the image while drawing, so a vertex
further out means the annotation or its recorded image size is wrong); a LabelMe mask whose
box leaves the image or whose PNG is not the box's size, an RLE of another size than its
image, a missing image file (naming every path tried), an unknown category (listing those
there are) are refused. Without
``--category``, an export with one category uses it (logged); with several it is an error
listing them. An annotated image without an object of the category is skipped, named in a
warning (``folders.read_support_set``).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import io
import math
import os
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from absl import logging
from PIL import Image, ImageDraw

from metaseg import jsonfile
from metaseg.errors import DataError

VERTEX_TOLERANCE = 1.0  # pixels a vertex may lie outside its image (rounding in exports)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABELME_AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
CVAT_LABELMAP, CVAT_MASKS, CVAT_IMAGES = "labelmap.txt", "SegmentationClass", "JPEGImages"
CVAT_BACKGROUND = "background"
MAX_LISTED = 5


class Example(NamedTuple):
    """One support example, read later by ``folders.read_support_set``."""

    name: str  # the image's file name in its export or folder (adaptation.json, messages)
    image: Union[str, bytes]  # the image file, or its encoded bytes (LabelMe imageData)
    image_label: str  # how messages name the image (its path, or where it is embedded)
    mask_label: str  # how messages name the mask (its file, or "x.json, image a.jpg")
    draw: Callable[[], np.ndarray]  # -> uint8 [H, W] in {0, 255} at the annotated size
    keep_empty: bool  # a mask file: an empty mask is an example; an export's: skip it


class Export(NamedTuple):
    """What one annotation export holds of the chosen category."""

    kind: str  # "COCO", "LabelMe" or "CVAT"
    path: str  # the --support given
    category: str
    examples: List[Example]  # annotated images that may hold the category
    skipped: List[str]  # image names with no annotation of the category (named in warnings)


def _listing(names: Sequence[str], limit: Optional[int] = MAX_LISTED) -> str:
    names = list(names)
    if limit is None or len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choose_category(categories: Sequence[str], wanted: Optional[str], where: str) -> str:
    """The category to adapt to: ``wanted``, or the only one; DataError listing them else."""
    categories = list(dict.fromkeys(categories))
    if wanted is None:
        if len(categories) == 1:
            logging.info("%s has one category, %r: adapting to it", where, categories[0])
            return categories[0]
        if not categories:
            raise DataError(f"{where} holds no categories (labels); annotate objects first")
        raise DataError(f"{where} has {len(categories)} categories; choose one with --category "
                        f"NAME: {_listing(categories, None)}")
    if wanted not in categories:
        raise DataError(f"--category {wanted!r} is not in {where}{_suggest(wanted, categories)}; "
                        f"its categories: {_listing(categories, None)}")
    return wanted


def check_vertices(points, width: int, height: int, what: str) -> None:
    """DataError naming ``what`` if a vertex (float [m, 2], x then y, pixel units, the image
    spanning [0, width] x [0, height]) is not finite or lies more than
    ``VERTEX_TOLERANCE`` outside the image."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    bad = ~np.isfinite(points).all(axis=1)
    tol = VERTEX_TOLERANCE
    with np.errstate(invalid="ignore"):
        bad |= ((points[:, 0] < -tol) | (points[:, 0] > width + tol)
                | (points[:, 1] < -tol) | (points[:, 1] > height + tol))
    if bad.any():
        x, y = points[int(np.argmax(bad))]
        raise DataError(f"{what} has a vertex at ({x:g}, {y:g}), more than {tol:g} pixel outside "
                        f"its {width}x{height} image ({int(bad.sum())} of its {len(points)} "
                        "vertices are); fix the annotation (or the image size recorded with it)")


def _read_json(path: str):
    return jsonfile.read_json(path, "re-export it", require_object=False)


def _first_existing(relative: str, roots: Sequence[str], what: str) -> str:
    tried = [os.path.normpath(os.path.join(root, relative)) for root in roots]
    for path in tried:
        if os.path.isfile(path):
            return path
    raise DataError(f"{what} names image {relative!r}, which does not exist; tried "
                    f"{', '.join(tried)} (put the images there, or pass --support_images DIR)")


# -- detection --------------------------------------------------------------------------------

def detect_format(path: str) -> str:
    """"coco", "labelme", "cvat" or "folder" (image/mask pairs) for a --support path: a .json
    file is COCO; a folder with ``SegmentationClass/`` CVAT (``labelmap.txt`` required); a
    folder with ``images/`` and ``masks/`` pairs; another folder holding .json files LabelMe."""
    if os.path.isfile(path):
        if path.lower().endswith(".json"):
            return "coco"
        raise DataError(f"--support {path} is a file: pass a folder of image/mask pairs, a "
                        "COCO .json file, a folder of LabelMe .json files or a CVAT "
                        "segmentation-mask export folder")
    if not os.path.isdir(path):
        raise DataError(f"support folder {path} does not exist or is not a folder")
    if os.path.isdir(os.path.join(path, CVAT_MASKS)):
        if not os.path.isfile(os.path.join(path, CVAT_LABELMAP)):
            raise DataError(f"{path} has {CVAT_MASKS}/ but no {CVAT_LABELMAP}, which says the "
                            "colour of each label; export it from CVAT as 'Segmentation mask "
                            "1.1' (which writes it)")
        return "cvat"
    if all(os.path.isdir(os.path.join(path, sub)) for sub in ("images", "masks")):
        return "folder"  # the images/ and masks/ layout, whatever else lies beside them
    if any(name.lower().endswith(".json") and os.path.isfile(os.path.join(path, name))
           for name in os.listdir(path)):
        return "labelme"
    return "folder"


def read_export(path: str, category: Optional[str], images_dir: Optional[str]) -> Export:
    """The examples of ``category`` in the export at ``path`` (``detect_format`` says which)."""
    kind = detect_format(path)
    if images_dir is not None and not os.path.isdir(images_dir):
        raise DataError(f"--support_images {images_dir} does not exist or is not a folder")
    readers = {"coco": read_coco, "labelme": read_labelme, "cvat": read_cvat}
    if kind not in readers:
        raise DataError(f"--support {path} is a folder of image/mask pairs, not an annotation "
                        "export")
    return readers[kind](path, category, images_dir)


# -- COCO -------------------------------------------------------------------------------------

def coco_image_roots(json_path: str, images_dir: Optional[str]) -> List[str]:
    """Folders a COCO ``file_name`` is looked up in, in order."""
    if images_dir is not None:
        return [images_dir]
    here = os.path.dirname(os.path.abspath(json_path))
    roots = [here, os.path.join(here, "images")]
    if os.path.basename(here) == "annotations":
        parent = os.path.dirname(here)
        roots.append(os.path.join(parent, "images"))
        split = re.fullmatch(r"instances_(.+)\.json", os.path.basename(json_path))
        if split:
            roots += [os.path.join(parent, "images", split.group(1)),
                      os.path.join(parent, split.group(1))]
    return roots


def _coco_checked(ann: dict, info: dict, where: str) -> dict:
    """``ann`` after checking its segmentation fits its image (DataError naming it)."""
    height, width = int(info["height"]), int(info["width"])
    what = f"{where}: annotation {ann.get('id')} (image {info.get('file_name')})"
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list):
        if not segmentation or any(not isinstance(p, list) or len(p) < 6 or len(p) % 2
                                   for p in segmentation):
            raise DataError(f"{what} has a polygon that is not a list of 3 or more (x, y) "
                            "vertices; fix it or delete it")
        for polygon in segmentation:
            check_vertices(polygon, width, height, what)
        return ann
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise DataError(f"{what} has no segmentation (polygons or RLE); COCO files for "
                        "segmentation need one")
    if list(segmentation.get("size", [])) != [height, width]:
        raise DataError(f"{what} is an RLE of size {segmentation.get('size')} (height, width) "
                        f"but its image is {height}x{width}; re-export it")
    counts = segmentation["counts"]
    if isinstance(counts, list) and sum(counts) != height * width:
        raise DataError(f"{what} is an uncompressed RLE covering {sum(counts)} pixels, not the "
                        f"image's {height * width}; re-export it")
    return ann


def _coco_drawer(anns: List[dict], info: dict, where: str):
    def draw() -> np.ndarray:
        from metaseg.datasets.coco import pycocotools_mask  # pylint: disable=C0415
        height, width = int(info["height"]), int(info["width"])
        mask = np.zeros((height, width), bool)
        for ann in anns:
            try:
                mask |= np.asarray(pycocotools_mask(ann, height, width)).reshape(
                    height, width) > 0
            except (TypeError, ValueError, OverflowError) as e:
                raise DataError(f"{where}: annotation {ann.get('id')} (image "
                                f"{info['file_name']}) cannot be decoded: {e}") from None
        return np.where(mask, 255, 0).astype(np.uint8)
    return draw


def read_coco(path: str, category: Optional[str], images_dir: Optional[str]) -> Export:
    """The images of a COCO instances file with annotations of ``category``."""
    data = _read_json(path)
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"{path} is not a COCO instances file (it needs 'images', "
                        "'annotations' and 'categories' lists)")
    ids: Dict[str, int] = {}
    for c in data["categories"]:
        ids.setdefault(str(c.get("name")), c.get("id"))
    category = choose_category(list(ids), category, path)
    images = {im.get("id"): im for im in data["images"]}
    for im in images.values():
        if not (isinstance(im.get("file_name"), str) and isinstance(im.get("width"), int)
                and isinstance(im.get("height"), int)):
            raise DataError(f"{path}: image entry {im.get('id')} lacks a file_name, width or "
                            "height; re-export it")
    by_image: Dict[int, List[dict]] = {}
    for ann in data["annotations"]:
        if ann.get("category_id") != ids[category]:
            continue
        if ann.get("image_id") not in images:
            raise DataError(f"{path}: annotation {ann.get('id')} names image id "
                            f"{ann.get('image_id')}, which is not in its 'images'; re-export it")
        info = images[ann["image_id"]]
        by_image.setdefault(ann["image_id"], []).append(_coco_checked(ann, info, path))
    roots = coco_image_roots(path, images_dir)
    examples, skipped = [], []
    for image_id, info in images.items():
        if image_id not in by_image:
            skipped.append(info["file_name"])
            continue
        image = _first_existing(info["file_name"], roots, path)
        examples.append(Example(info["file_name"], image, image,
                                f"{path} (image {info['file_name']})",
                                _coco_drawer(by_image[image_id], info, path), False))
    return Export("COCO", path, category, examples, skipped)


# -- LabelMe ----------------------------------------------------------------------------------

def _labelme_files(folder: str) -> List[Tuple[str, dict]]:
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (name.lower().endswith(".json") and os.path.isfile(path)):
            continue
        data = _read_json(path)
        if isinstance(data, dict) and "annotations" in data and "images" in data:
            raise DataError(f"{path} is a COCO file, not LabelMe: pass it as --support {path}")
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise DataError(f"{path} is not a LabelMe file (no 'shapes' list); a LabelMe "
                            "--support folder holds only LabelMe .json files and images")
        if not (isinstance(data.get("imageWidth"), int)
                and isinstance(data.get("imageHeight"), int)):
            raise DataError(f"{path} lacks imageWidth/imageHeight; save it again in LabelMe")
        out.append((path, data))
    return out


def _labelme_image(path: str, data: dict, images_dir: Optional[str]):
    """(image path or bytes, how messages name it, its file name) of one LabelMe file."""
    relative = str(data.get("imagePath") or "").replace("\\", "/")
    if data.get("imageData"):
        try:
            encoded = base64.b64decode(data["imageData"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise DataError(f"{path}: its imageData is not base64; save it again in LabelMe "
                            "(or remove imageData and keep the image beside it)") from None
        return encoded, f"the image embedded in {path} (imageData)", (
            os.path.basename(relative) or os.path.basename(path))
    if not relative:
        raise DataError(f"{path} has neither imageData nor imagePath; save it again in LabelMe")
    roots = [os.path.dirname(path)]
    if images_dir is not None:
        roots, relative = [images_dir], os.path.basename(relative)
    image = _first_existing(relative, roots, path)
    return image, image, os.path.basename(relative)


def _labelme_bitmap(shape: dict, points: np.ndarray, width: int, height: int, what: str):
    """(x1, y1, bool [h, w]) of a LabelMe ``mask`` shape: its PNG and the box it fills."""
    if len(points) != 2 or not np.isfinite(points).all():
        raise DataError(f"{what}: a mask shape needs 2 points (its box's top-left and "
                        f"bottom-right pixels), it has {len(points)}; save it again in LabelMe")
    (x1, y1), (x2, y2) = points.astype(int).tolist()  # as LabelMe's shapes_to_label
    if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
        raise DataError(f"{what}: its mask's box ({x1}, {y1})-({x2}, {y2}) is not inside its "
                        f"{width}x{height} image; fix the annotation (or the image size "
                        "recorded with it)")
    try:
        encoded = base64.b64decode(shape.get("mask") or "", validate=True)
        with Image.open(io.BytesIO(encoded)) as im:
            bitmap = np.asarray(im.convert("L")) > 0
    except (binascii.Error, ValueError, TypeError, OSError):
        raise DataError(f"{what} is a mask shape whose 'mask' is not a base64 PNG; save it "
                        "again in LabelMe") from None
    if bitmap.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise DataError(f"{what}: its mask is {bitmap.shape[1]}x{bitmap.shape[0]} but its box "
                        f"({x1}, {y1})-({x2}, {y2}) is {x2 - x1 + 1}x{y2 - y1 + 1}; save it "
                        "again in LabelMe")
    return x1, y1, bitmap


def labelme_area(shape: dict, width: int, height: int, what: str):
    """(shape type, [(x, y)] vertices, or (x1, y1, bool bitmap) for a mask) of one LabelMe
    area shape; DataError naming ``what`` for a shape that marks no area, malformed points,
    a vertex out of the image or a mask that does not fit its box."""
    kind = shape.get("shape_type") or "polygon"
    if kind not in LABELME_AREA_SHAPES:
        raise DataError(f"{what} is a {kind!r} shape, which marks no area; only "
                        f"{', '.join(LABELME_AREA_SHAPES)} shapes make a mask (delete it or "
                        "redraw it as a polygon)")
    try:
        points = np.asarray(shape.get("points"), np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise DataError(f"{what} has malformed points; save it again in LabelMe") from None
    if kind == "mask":
        return kind, _labelme_bitmap(shape, points, width, height, what)
    if (kind == "polygon" and len(points) < 3) or (kind != "polygon" and len(points) != 2):
        raise DataError(f"{what}: a {kind} needs {'3 or more' if kind == 'polygon' else '2'} "
                        f"points, it has {len(points)}")
    check_vertices(points, width, height, what)
    return kind, [tuple(p) for p in points.tolist()]


def _labelme_drawer(areas: List[Tuple[str, list]], width: int, height: int):
    """Draws the areas in 1s as LabelMe's own ``shape_to_mask`` does (outline included)."""
    def draw() -> np.ndarray:
        canvas = Image.new("L", (width, height), 0)
        pen = ImageDraw.Draw(canvas)
        pasted = np.zeros((height, width), bool)
        for kind, xy in areas:
            if kind == "mask":
                x1, y1, bitmap = xy
                pasted[y1:y1 + bitmap.shape[0], x1:x1 + bitmap.shape[1]] |= bitmap
            elif kind == "polygon":
                pen.polygon(xy, outline=1, fill=1)
            elif kind == "rectangle":
                (x0, y0), (x1, y1) = xy
                pen.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
                              outline=1, fill=1)
            else:  # circle: its centre, then a point on it
                (cx, cy), (px, py) = xy
                r = math.hypot(cx - px, cy - py)
                pen.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
        return np.where((np.asarray(canvas) > 0) | pasted, 255, 0).astype(np.uint8)
    return draw


def read_labelme(folder: str, category: Optional[str], images_dir: Optional[str]) -> Export:
    """The LabelMe files of ``folder`` with shapes labelled ``category``."""
    files = _labelme_files(folder)
    labels = sorted({str(s.get("label")) for _, data in files for s in data["shapes"]})
    category = choose_category(labels, category, f"LabelMe folder {folder}")
    examples, skipped = [], []
    for path, data in files:
        shapes = [(i, s) for i, s in enumerate(data["shapes"]) if str(s.get("label")) == category]
        if not shapes:
            skipped.append(os.path.basename(path))
            continue
        width, height = data["imageWidth"], data["imageHeight"]
        areas = [labelme_area(s, width, height, f"{path}: shape {i} ({category!r})")
                 for i, s in shapes]
        image, image_label, name = _labelme_image(path, data, images_dir)
        examples.append(Example(name, image, image_label, path,
                                _labelme_drawer(areas, width, height), False))
    return Export("LabelMe", folder, category, examples, skipped)


# -- CVAT -------------------------------------------------------------------------------------

def read_labelmap(path: str) -> Dict[str, Tuple[int, int, int]]:
    """{label: (r, g, b)} of a CVAT/Datumaro ``labelmap.txt`` (``name:r,g,b:parts:actions``)."""
    colours: Dict[str, Tuple[int, int, int]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            colour = tuple(int(v) for v in rest.split(":")[0].split(","))
        except ValueError:
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise DataError(f"{path} line {number} ({line.strip()!r}) is not "
                            "'label:r,g,b:parts:actions'; export it again from CVAT")
        colours[name.strip()] = colour  # type: ignore[assignment]
    return colours


def _cvat_names(folder: str) -> List[str]:
    """Image names (no extension, maybe with subfolders) of a CVAT export."""
    lists = os.path.join(folder, "ImageSets", "Segmentation")
    names: List[str] = []
    if os.path.isdir(lists):
        for subset in sorted(n for n in os.listdir(lists) if n.endswith(".txt")):
            with open(os.path.join(lists, subset), encoding="utf-8") as f:
                names += [line.strip() for line in f if line.strip()]
    if not names:
        masks = os.path.join(folder, CVAT_MASKS)
        for root, _, files in os.walk(masks):
            names += [os.path.relpath(os.path.join(root, n), masks)[:-len(".png")]
                      for n in files if n.lower().endswith(".png")]
    return sorted(dict.fromkeys(names))


def _cvat_image(folder: str, name: str, images_dir: Optional[str]) -> str:
    roots = [images_dir] if images_dir is not None else [os.path.join(folder, CVAT_IMAGES)]
    tried = [os.path.join(r, name) + "{" + ",".join(IMAGE_EXTENSIONS) + "}" for r in roots]
    for root in roots:
        for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
            if os.path.isfile(os.path.join(root, name + ext)):
                return os.path.join(root, name + ext)
    raise DataError(f"CVAT export {folder} has a mask for image {name!r}, which does not "
                    f"exist; tried {', '.join(tried)} (export with 'Save images' checked, or "
                    "pass --support_images DIR)")


def _cvat_drawer(mask_path: str, colour: Tuple[int, int, int], index: int):
    def draw() -> np.ndarray:
        from metaseg.data import image_io  # pylint: disable=import-outside-toplevel
        im = image_io.open_image(mask_path)
        if im.mode in ("L", "I", "I;16"):  # one channel without a palette: label indices
            hit = np.asarray(im) == index
        else:
            hit = (np.asarray(im.convert("RGB")) == np.asarray(colour, np.uint8)).all(-1)
        return np.where(hit, 255, 0).astype(np.uint8)
    return draw


def read_cvat(folder: str, category: Optional[str], images_dir: Optional[str]) -> Export:
    """The images of a CVAT "Segmentation mask 1.1" export, masks of ``category``."""
    colours = read_labelmap(os.path.join(folder, CVAT_LABELMAP))
    labels = [n for n in colours if n != CVAT_BACKGROUND]
    category = choose_category(labels, category, f"CVAT export {folder} ({CVAT_LABELMAP})")
    index = list(colours).index(category)
    examples = []
    for name in _cvat_names(folder):
        mask_path = os.path.join(folder, CVAT_MASKS, name + ".png")
        if not os.path.isfile(mask_path):
            raise DataError(f"CVAT export {folder} lists image {name!r} in ImageSets but has no "
                            f"mask {mask_path}; export it again")
        image = _cvat_image(folder, name, images_dir)
        examples.append(Example(os.path.basename(image), image, image, mask_path,
                                _cvat_drawer(mask_path, colours[category], index), False))
    if not examples:
        raise DataError(f"CVAT export {folder} holds no masks in {CVAT_MASKS}/")
    return Export("CVAT", folder, category, examples, [])
