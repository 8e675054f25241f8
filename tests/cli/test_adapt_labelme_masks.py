"""LabelMe ``mask`` shapes (LabelMe >= 5.3: a base64 PNG of a box's pixels, the box's
top-left and bottom-right pixels as ``points``) read as support masks beside polygons,
rectangles and circles; and each bad LabelMe folder through the real ``python -m metaseg
adapt`` command line: one error line naming the file, exit 2, nothing written."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from metaseg.cli import folders
from tests.cli.conftest import own_stderr_lines
from tests.cli.test_adapt_annotations import (H, W, box, labelme, photo, query_folder, run_adapt,
                                              shape)


def mask_shape(label, x1, y1, bitmap):
    """A LabelMe 5.3+ mask shape: ``bitmap`` bool [h, w] fills the box from (x1, y1)."""
    buffer = io.BytesIO()
    Image.fromarray(bitmap).save(buffer, format="PNG")  # mode "1", as LabelMe saves it
    h, w = bitmap.shape
    return {**shape(label, "mask", [[x1, y1], [x1 + w - 1, y1 + h - 1]]),
            "mask": base64.b64encode(buffer.getvalue()).decode("ascii")}


# a ring 12x10 px (its centre empty), pasted at x 50.., y 20..
RING = np.ones((10, 12), bool)
RING[3:7, 4:8] = False


def write_folder(folder, shapes_by_file):
    folder.mkdir(parents=True)
    Image.fromarray(photo("coffee")).save(folder / "coffee.jpg", quality=95)
    Image.fromarray(photo("chelsea")).save(folder / "chelsea.jpg", quality=95)
    for stem, shapes in shapes_by_file.items():
        (folder / f"{stem}.json").write_text(json.dumps(labelme(f"{stem}.jpg", shapes)))
    return folder


def masked_folder(folder):
    return write_folder(folder, {
        "coffee": [mask_shape("cup", 50, 20, RING),
                   shape("cup", "polygon", [[5, 5], [20, 5], [20, 15], [5, 15]])],
        "chelsea": [mask_shape("cup", 0, 0, box(0, 8, 0, 9)[:8, :9])],  # at the corner
    })


def expected_coffee():
    mask = box(5, 16, 5, 21)  # the polygon, outline included
    mask[20:30, 50:62] |= RING
    return mask


def test_mask_shapes_are_pasted_into_their_box(tmp_path):
    source = folders.support_examples(str(masked_folder(tmp_path / "lm")), "cup")
    by_name = {e.name: e for e in source.examples}
    assert (source.kind, sorted(by_name)) == ("LabelMe", ["chelsea.jpg", "coffee.jpg"])
    np.testing.assert_array_equal(by_name["coffee.jpg"].draw() > 0, expected_coffee())
    np.testing.assert_array_equal(by_name["chelsea.jpg"].draw() > 0, box(0, 8, 0, 9))


def test_adapt_command_on_mask_shapes(tmp_path):
    support = masked_folder(tmp_path / "lm")
    result = run_adapt(support, query_folder(tmp_path / "query"), tmp_path / "out",
                       "--category", "cup")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "model" / "adaptation.json").read_text())
    assert (record["support_format"], record["support"]) == ("LabelMe",
                                                              ["chelsea.jpg", "coffee.jpg"])
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "q.png"))
    assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}


def _bad_png(label):
    return {**shape(label, "mask", [[1, 1], [4, 4]]), "mask": "bm90IGEgcG5n"}  # "not a png"


BAD = {  # case: (files, --category, pieces of the one error line, the file named)
    "mask box outside": ({"coffee": [mask_shape("cup", 75, 55, RING)]}, "cup",
                         ["(75, 55)-(86, 64)", "not inside its 80x60 image"], "coffee.json"),
    "mask not its box's size": (
        {"coffee": [{**mask_shape("cup", 2, 2, RING), "points": [[2, 2], [20, 20]]}]}, "cup",
        ["mask is 12x10", "box (2, 2)-(20, 20) is 19x19"], "coffee.json"),
    "mask not a PNG": ({"coffee": [_bad_png("cup")]}, "cup", ["not a base64 PNG"],
                       "coffee.json"),
    "polygon outside": ({"chelsea": [shape("cup", "polygon", [[1, 1], [90, 1], [9, 9]])]},
                        "cup", ["(90, 1)", "outside its 80x60 image"], "chelsea.json"),
    "missing image": ({"coffee": [shape("cup", "rectangle", [[1, 1], [9, 9]])],
                       "gone": [shape("cup", "rectangle", [[1, 1], [9, 9]])]}, "cup",
                      ["names image 'gone.jpg'", "does not exist", "--support_images"],
                      "gone.json"),
    "unknown category": ({"coffee": [shape("cup", "rectangle", [[1, 1], [9, 9]])]}, "mug",
                         ["--category 'mug' is not in", "its categories: cup"], "lm"),
    "unreadable file": ({"coffee": [shape("cup", "rectangle", [[1, 1], [9, 9]])]}, "cup",
                        ["is not valid JSON", "re-export it"], "broken.json"),
    "line shape": ({"coffee": [shape("cup", "line", [[1, 1], [9, 9]])]}, "cup",
                   ["'line' shape, which marks no area", "polygon, rectangle, circle, mask"],
                   "coffee.json"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_labelme_folder_one_line_exit_2(case, tmp_path):
    files, category, pieces, named = BAD[case]
    support = write_folder(tmp_path / "lm", files)
    if case == "unreadable file":
        (support / "broken.json").write_text('{"shapes": [')
    result = run_adapt(support, query_folder(tmp_path / "query"), tmp_path / "out",
                       "--category", category, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = own_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for piece in pieces + [named]:
        assert piece in lines[0], (piece, lines[0])
    assert lines[0].count(named) == 1 or named == "lm", lines[0]
    assert not (tmp_path / "out").exists()
