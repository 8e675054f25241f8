"""``metaseg adapt --support`` reads annotation exports of one ``--category``: a COCO
instances JSON (polygon, compressed and uncompressed RLE), a LabelMe folder (rectangle,
polygon, circle, embedded imageData) and a CVAT "Segmentation mask 1.1" export (RGB and
palette masks), on real photos (scikit-image's samples). Each gives the same support pairs
as a folder of the same images with the masks the annotations describe; an image without
the category is skipped and named once; bad exports end in one error line, exit 2, nothing
written."""
import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from skimage import data as skimage_data

from metaseg.__main__ import main
from metaseg.cli import folders
from tests.cli.conftest import own_stderr_lines, subprocess_env
from tests.conftest import time_limit
from tests.data.test_masks import save_exif_rotated

W, H = 80, 60  # every photo, as annotated
INIT = "quickstart_b0_64"  # the shipped preset
SIZE = 32  # the side the tests adapt at


def photo(name):
    """uint8 [60, 80, 3]: a scikit-image sample photo, resized."""
    image = getattr(skimage_data, name)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    return np.asarray(Image.fromarray(image).resize((W, H), Image.BILINEAR))


def box(y0, y1, x0, x1):
    """bool [H, W]: rows y0..y1-1, columns x0..x1-1."""
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def disc(cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def uncompressed_rle(mask):
    """COCO's uncompressed RLE of bool [H, W]: column-major runs, starting with background."""
    counts, current, run = [], False, 0
    for value in mask.T.reshape(-1):
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def compressed_rle(mask):
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def save_folder(directory, pairs):
    """The plain-folder equivalent: images/NAME and masks/STEM.png (0/255)."""
    (directory / "images").mkdir(parents=True)
    (directory / "masks").mkdir()
    for name, image_file, mask in pairs:
        (directory / "images" / name).write_bytes(image_file.read_bytes())
        stem = os.path.splitext(name)[0]
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(
            directory / "masks" / f"{stem}.png")
    return directory


# -- COCO -------------------------------------------------------------------------------------

COCO_CUP = {  # the cup masks the COCO file below describes, by image
    "coffee.jpg": box(0, 30, 0, 40),  # its polygon starts 0.6 px outside: clipped
    "photos/chelsea.jpg": disc(30, 50, 12) | box(5, 20, 5, 25),  # RLE + uncompressed RLE
    "sideways.jpg": box(10, 30, 10, 40),  # stored turned, EXIF orientation 6
}


def write_coco(root, **spoil):
    """root/coco.json with its images in root/images/; returns the JSON path."""
    images_dir = root / "images"
    (images_dir / "photos").mkdir(parents=True)
    Image.fromarray(photo("coffee")).save(images_dir / "coffee.jpg", quality=95)
    Image.fromarray(photo("chelsea")).save(images_dir / "photos" / "chelsea.jpg", quality=95)
    Image.fromarray(photo("astronaut")).save(images_dir / "astronaut.jpg", quality=95)
    save_exif_rotated(photo("rocket"), images_dir / "sideways.jpg")
    names = ["coffee.jpg", "photos/chelsea.jpg", "astronaut.jpg", "sideways.jpg"]
    images = [{"id": i + 1, "file_name": n, "width": W, "height": H} for i, n in enumerate(names)]
    anns = [
        {"id": 7, "image_id": 1, "category_id": 3, "iscrowd": 0,
         "segmentation": [[-0.6, -0.6, 40, -0.6, 40, 30, -0.6, 30]]},
        {"id": 8, "image_id": 2, "category_id": 3, "iscrowd": 1,
         "segmentation": compressed_rle(disc(30, 50, 12))},
        {"id": 9, "image_id": 2, "category_id": 3, "iscrowd": 1,
         "segmentation": uncompressed_rle(box(5, 20, 5, 25))},
        {"id": 10, "image_id": 3, "category_id": 5, "iscrowd": 0,  # a plate only: skipped
         "segmentation": [[10, 10, 30, 10, 30, 30]]},
        {"id": 11, "image_id": 4, "category_id": 3, "iscrowd": 0,
         "segmentation": [[10, 10, 40, 10, 40, 30, 10, 30]]},
    ]
    categories = [{"id": 3, "name": "cup"}, {"id": 5, "name": "plate"}]
    data = {"images": images, "annotations": anns, "categories": categories}
    for key, change in spoil.items():
        change(data)
    path = root / "coco.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_export_gives_the_folder_pairs(tmp_path):
    path = write_coco(tmp_path / "export")
    source = folders.support_examples(str(path), "cup")
    assert (source.kind, source.category, source.skipped) == ("COCO", "cup", ["astronaut.jpg"])
    assert [e.name for e in source.examples] == list(COCO_CUP)
    for example in source.examples:
        np.testing.assert_array_equal(example.draw() > 0, COCO_CUP[example.name], example.name)
    support = folders.read_support_set(source, 64)
    images = tmp_path / "export" / "images"
    folder = save_folder(tmp_path / "folder", [(os.path.basename(n), images / n, m)
                                               for n, m in COCO_CUP.items()])
    # the folder sorts by name: chelsea, coffee, sideways
    reference = folders.read_support_set(folders.support_examples(str(folder)), 64)
    order = [1, 0, 2]
    np.testing.assert_array_equal(support.images, reference.images[order])
    np.testing.assert_array_equal(support.masks, reference.masks[order])
    # the sideways photo is read upright (as its annotation was drawn)
    shown = np.asarray(Image.fromarray(photo("rocket")).resize((64, 64), Image.BILINEAR), float)
    read = support.images[2].astype(float)
    assert np.abs(read - shown).mean() < 0.25 * np.abs(np.rot90(read) - shown).mean()


# -- LabelMe ----------------------------------------------------------------------------------

def labelme(image_path, shapes, image_data=None):
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": image_data, "imageHeight": H, "imageWidth": W}


def shape(label, kind, points):
    return {"label": label, "points": points, "group_id": None, "shape_type": kind,
            "flags": {}}


def write_labelme(folder, *, extra_shape=None):
    folder.mkdir(parents=True)
    Image.fromarray(photo("coffee")).save(folder / "coffee.jpg", quality=95)
    a = [shape("cup", "rectangle", [[20, 15], [5, 5]]),  # corners in any order
         shape("cup", "polygon", [[30, 10], [50, 10], [50, 25], [30, 25]]),
         shape("plate", "polygon", [[60, 40], [79, 40], [79, 59]])]
    if extra_shape:
        a.append(extra_shape)
    (folder / "coffee.json").write_text(json.dumps(labelme("coffee.jpg", a)))
    buffer = io.BytesIO()
    Image.fromarray(photo("chelsea")).save(buffer, format="PNG")
    embedded = base64.b64encode(buffer.getvalue()).decode("ascii")
    b = [shape("cup", "circle", [[40, 30], [50, 30]])]
    (folder / "chelsea.json").write_text(json.dumps(labelme("gone/chelsea.png", b, embedded)))
    c = [shape("plate", "polygon", [[1, 1], [20, 1], [20, 20]])]
    (folder / "saucer.json").write_text(json.dumps(labelme("coffee.jpg", c)))
    return folder


def test_labelme_folder_gives_the_folder_pairs(tmp_path):
    source = folders.support_examples(str(write_labelme(tmp_path / "labelme")), "cup")
    assert (source.kind, source.skipped) == ("LabelMe", ["saucer.json"])
    by_name = {e.name: e for e in source.examples}
    assert sorted(by_name) == ["chelsea.png", "coffee.jpg"]
    # PIL draws the outline too, as LabelMe does: both corners are inside
    coffee = box(5, 16, 5, 21) | box(10, 26, 30, 51)
    np.testing.assert_array_equal(by_name["coffee.jpg"].draw() > 0, coffee)
    circle = by_name["chelsea.png"].draw() > 0
    assert (disc(30, 40, 9) <= circle).all() and (circle <= disc(30, 40, 11)).all()
    support = folders.read_support_set(source, 64)
    (tmp_path / "chelsea.png").write_bytes(base64.b64decode(json.loads(
        (tmp_path / "labelme" / "chelsea.json").read_text())["imageData"]))
    folder = save_folder(tmp_path / "folder", [
        ("chelsea.png", tmp_path / "chelsea.png", circle),
        ("coffee.jpg", tmp_path / "labelme" / "coffee.jpg", coffee)])
    reference = folders.read_support_set(folders.support_examples(str(folder)), 64)
    np.testing.assert_array_equal(support.images, reference.images)  # json order = stem order
    np.testing.assert_array_equal(support.masks, reference.masks)


# -- CVAT -------------------------------------------------------------------------------------

CUP, PLATE = (250, 50, 83), (51, 221, 255)


def write_cvat(root, *, images=True):
    """A CVAT 'Segmentation mask 1.1' export: coffee (RGB mask), chelsea (palette mask,
    as Datumaro writes them), astronaut (a plate only)."""
    for sub in ("SegmentationClass", "ImageSets/Segmentation", "JPEGImages"):
        (root / sub).mkdir(parents=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                       f"cup:{','.join(map(str, CUP))}::\n"
                                       f"plate:{','.join(map(str, PLATE))}::\n")
    (root / "ImageSets/Segmentation/default.txt").write_text("coffee\nchelsea\nastronaut\n")
    coffee = np.zeros((H, W, 3), np.uint8)
    coffee[box(5, 40, 10, 30)] = CUP
    coffee[box(45, 55, 50, 70)] = PLATE
    Image.fromarray(coffee).save(root / "SegmentationClass/coffee.png")
    indices = np.zeros((H, W), np.uint8)
    indices[disc(25, 45, 15)] = 1
    indices[box(0, 5, 0, 80)] = 2
    palette = Image.frombytes("P", (W, H), indices.tobytes())
    palette.putpalette([0, 0, 0, *CUP, *PLATE] + [0] * (256 * 3 - 9))
    palette.save(root / "SegmentationClass/chelsea.png")
    astronaut = np.zeros((H, W, 3), np.uint8)
    astronaut[box(10, 20, 10, 20)] = PLATE
    Image.fromarray(astronaut).save(root / "SegmentationClass/astronaut.png")
    if images:
        for name in ("coffee", "chelsea", "astronaut"):
            Image.fromarray(photo(name)).save(root / f"JPEGImages/{name}.jpg", quality=95)
    return root


def test_cvat_export_gives_the_folder_pairs(tmp_path, caplog):
    source = folders.support_examples(str(write_cvat(tmp_path / "cvat")), "cup")
    assert source.kind == "CVAT" and [e.name for e in source.examples] == [
        "astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
    support = folders.read_support_set(source, 64)
    assert support.names == ["chelsea.jpg", "coffee.jpg"]
    assert support.skipped == ["astronaut.jpg"]  # no cup pixel: skipped, named
    assert sum("astronaut.jpg" in r.getMessage() for r in caplog.records) == 1
    jpegs = tmp_path / "cvat" / "JPEGImages"
    folder = save_folder(tmp_path / "folder", [("chelsea.jpg", jpegs / "chelsea.jpg",
                                                disc(25, 45, 15)),
                                               ("coffee.jpg", jpegs / "coffee.jpg",
                                                box(5, 40, 10, 30))])
    reference = folders.read_support_set(folders.support_examples(str(folder)), 64)
    np.testing.assert_array_equal(support.images, reference.images)
    np.testing.assert_array_equal(support.masks, reference.masks)


# -- bad input: one line, exit 2, nothing written ------------------------------------------------

def _set(image=None, annotation=None, **fields):
    def change(data):
        target = (data["images"][image] if image is not None
                  else data["annotations"][annotation])
        target.update(fields)
    return change


def _add_category(data):
    data["categories"].append({"id": 9, "name": "saucer"})


def _coco(tmp_path, **spoil):
    return write_coco(tmp_path / "export", **spoil)


BAD = {
    "COCO image missing": (lambda t: _coco(t, a=_set(image=0, file_name="nowhere.jpg")),
                           ["cup"], ["coco.json", "'nowhere.jpg'", "does not exist",
                                     os.path.join("images", "nowhere.jpg"), "--support_images"]),
    "COCO unknown category": (_coco, ["mug"], ["'mug'", "not in", "cup, plate"]),
    "COCO several categories": (_coco, [], ["2 categories", "--category NAME", "cup, plate"]),
    "COCO polygon outside": (
        lambda t: _coco(t, a=_set(annotation=0, segmentation=[[0, 0, 95, 10, 20, 30]])),
        ["cup"], ["coco.json", "annotation 7", "(95, 10)", "outside", "80x60"]),
    "COCO RLE of another size": (
        lambda t: _coco(t, a=_set(annotation=1, segmentation={"size": [30, 40],
                                                              "counts": [1200]})),
        ["cup"], ["annotation 8", "RLE of size [30, 40]", "60x80"]),
    "COCO annotation of no image": (lambda t: _coco(t, a=_set(annotation=0, image_id=99)),
                                    ["cup"], ["annotation 7", "image id 99"]),
    "COCO category without objects": (lambda t: _coco(t, a=_add_category), ["saucer"],
                                      ["none of its 4 images", "'saucer'"]),
    "LabelMe line shape": (
        lambda t: write_labelme(t / "lm", extra_shape=shape("cup", "line", [[1, 1], [9, 9]])),
        ["cup"], ["coffee.json", "'line' shape", "polygon, rectangle, circle"]),
    "LabelMe rectangle outside": (
        lambda t: write_labelme(t / "lm", extra_shape=shape("cup", "rectangle",
                                                            [[1, 1], [9, 70]])),
        ["cup"], ["coffee.json", "(9, 70)", "outside"]),
    "CVAT without images": (lambda t: write_cvat(t / "cvat", images=False), ["cup"],
                            ["'astronaut'", "JPEGImages", "Save images"]),
    "category for a plain folder": (
        lambda t: save_folder(t / "plain", [("a.png", _png(t), box(1, 9, 1, 9))]), ["cup"],
        ["--category applies only to annotation exports"]),
}


def _png(tmp_path):
    Image.fromarray(photo("coffee")).save(tmp_path / "a_source.png")
    return tmp_path / "a_source.png"


def query_folder(directory):
    directory.mkdir(parents=True)
    Image.fromarray(photo("coffee")).save(directory / "q.jpg", quality=95)
    return directory


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_export_one_line_exit_2(case, tmp_path, capsys):
    make, category, expected = BAD[case]
    support = make(tmp_path)
    query = query_folder(tmp_path / "query")
    argv = ["adapt", "--init", INIT, "--support", str(support), "--query", str(query),
            "--output", str(tmp_path / "out"), "--steps", "1"]
    if category:
        argv += ["--category", category[0]]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for piece in expected:
        assert piece in err[0], (piece, err[0])
    assert not (tmp_path / "out").exists()


# -- through the real command line ---------------------------------------------------------------

def run_adapt(support, query, output, *extra, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "metaseg", "adapt", "--init", INIT, "--support", str(support),
         "--query", str(query), "--output", str(output), "--image_size", str(SIZE),
         "--steps", "1", *extra],
        capture_output=True, text=True, env=subprocess_env(), timeout=time_limit(timeout))


@pytest.mark.parametrize("kind", ["COCO", "LabelMe", "CVAT"])
def test_adapt_command_on_an_export(kind, tmp_path):
    support, skipped, used = {
        "COCO": (lambda: write_coco(tmp_path / "export"), "astronaut.jpg",
                 list(COCO_CUP)),
        "LabelMe": (lambda: write_labelme(tmp_path / "lm"), "saucer.json",
                    ["coffee.jpg", "chelsea.png"]),
        "CVAT": (lambda: write_cvat(tmp_path / "cvat"), "astronaut.jpg",
                 ["chelsea.jpg", "coffee.jpg"]),
    }[kind]
    support = support()
    query = query_folder(tmp_path / "query")
    result = run_adapt(support, query, tmp_path / "out", "--category", "cup")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = own_stderr_lines(result.stderr)
    assert sum(skipped in line for line in lines if "skipped" in line) == 1, lines
    record = json.loads((tmp_path / "out" / "model" / "adaptation.json").read_text())
    assert record["support"] == (sorted(used) if kind == "LabelMe" else used)
    assert (record["support_format"], record["category"]) == (kind, "cup")
    assert record["support_skipped"] == [skipped]
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "q.png"))
    assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}


def test_adapt_command_missing_image_one_line(tmp_path):
    support = write_coco(tmp_path / "export", a=_set(image=1, file_name="photos/gone.jpg"))
    result = run_adapt(support, query_folder(tmp_path / "query"), tmp_path / "out",
                       "--category", "cup", timeout=120)
    assert result.returncode == 2
    lines = own_stderr_lines(result.stderr)
    assert len(lines) == 1 and "'photos/gone.jpg'" in lines[0] and "tried" in lines[0], lines
    assert not (tmp_path / "out").exists()
