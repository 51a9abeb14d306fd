"""Your own data: a folder described by dataset.json, the checking command, a short training."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import custom as custom_config
from configs import tiny
from deeplab_jax import errors, train
from deeplab_jax.data import check, custom, datasets, labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLORS = [(0, 0, 0), (200, 30, 30), (30, 200, 30)]


def _image(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _label(rng, height, width, values):
    return rng.choice(np.asarray(values, np.uint8), size=(height, width))


def _write_png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _index_dataset(folder, meta=None, splits=(("train", 4), ("val", 2)), values=(0, 1, 2, 255),
                   size=(20, 28)):
    """SPLIT/images/*.jpg + SPLIT/labels/*.png (greyscale index PNGs)."""
    rng = np.random.default_rng(0)
    for split, count in splits:
        for index in range(count):
            _write_png(f"{folder}/{split}/images/{split}_{index:02d}.png", _image(rng, *size))
            _write_png(f"{folder}/{split}/labels/{split}_{index:02d}.png",
                       _label(rng, *size, values))
    with open(f"{folder}/dataset.json", "w") as file:
        json.dump(meta or {"classes": ["background", "red", "green"]}, file)
    return folder


def _color_dataset(folder, size=(20, 28)):
    """train.txt / val.txt of 'image label' pairs, RGB colour labels."""
    rng = np.random.default_rng(1)
    palette = np.asarray(COLORS + [(255, 255, 255)], np.uint8)
    for split, count in (("train", 3), ("val", 2)):
        lines = []
        for index in range(count):
            image, label = f"img/{split}{index}.jpg", f"ann/{split}{index}.png"
            _write_png(f"{folder}/{image}", _image(rng, *size))
            _write_png(f"{folder}/{label}", palette[rng.integers(0, 4, size)])
            lines.append(f"{image} {label}")
        with open(f"{folder}/{split}.txt", "w") as file:
            file.write("\n".join(lines) + "\n")
    with open(f"{folder}/dataset.json", "w") as file:
        json.dump({"classes": ["background", "red", "green"], "label_format": "color",
                   "colors": COLORS, "ignore_colors": [[255, 255, 255]]}, file)
    return folder


def _data_config(folder, **fields):
    config = custom_config.get_config()
    config.data.folder = str(folder)
    config.data.update(fields)
    return config.data


def test_index_labels_from_subfolders(tmp_path):
    folder = _index_dataset(str(tmp_path / "mine"))
    source = datasets.get_dataset(_data_config(folder), "train")
    assert len(source) == 4 and source.num_classes == 3
    assert source.class_names == ("background", "red", "green")
    example = source[0]
    raw = np.asarray(Image.open(f"{folder}/train/labels/train_00.png"))
    np.testing.assert_array_equal(example["label"], raw)  # values are classes, 255 ignored
    assert example["image"].shape == (20, 28, 3) and example["image"].dtype == np.uint8
    assert datasets.dataset_info(_data_config(folder))["num_classes"] == 3


def test_label_values_and_ignore_values_map_files_to_classes(tmp_path):
    """ADE-like labels: values 1..2 are the classes, 0 is ignored, 7 and 9 are one class."""
    meta = {"classes": ["sky", "tree", "road"], "label_values": [1, 2, [7, 9]],
            "ignore_values": [0]}
    folder = _index_dataset(str(tmp_path / "mine"), meta, values=(0, 1, 2, 7, 9))
    source = datasets.get_dataset(_data_config(folder), "val")
    raw = np.asarray(Image.open(f"{folder}/val/labels/val_00.png"))
    expected = np.select([raw == 1, raw == 2, (raw == 7) | (raw == 9), raw == 0],
                         [0, 1, 2, 255])
    np.testing.assert_array_equal(source[0]["label"], expected)


def test_colour_labels_from_list_files(tmp_path):
    folder = _color_dataset(str(tmp_path / "colours"))
    source = datasets.get_dataset(_data_config(folder), "train")
    assert len(source) == 3
    rgb = np.asarray(Image.open(f"{folder}/ann/train0.png"))
    label = source[0]["label"]
    for index, color in enumerate(COLORS):
        assert np.all(label[np.all(rgb == color, axis=-1)] == index)
    assert np.all(label[np.all(rgb == 255, axis=-1)] == 255)
    np.testing.assert_array_equal(source.palette[:3], COLORS)


def test_a_colour_not_in_the_palette_names_the_file_and_the_colour(tmp_path):
    folder = _color_dataset(str(tmp_path / "colours"))
    rgb = np.asarray(Image.open(f"{folder}/ann/train1.png")).copy()
    rgb[0, :3] = (13, 14, 15)  # an antialiased edge, say
    Image.fromarray(rgb).save(f"{folder}/ann/train1.png")
    source = datasets.get_dataset(_data_config(folder), "train")
    with pytest.raises(labels.LabelColorError, match=r"train1\.png: 1 colour\(s\) .*\(13, 14, 15\): 3 px"):
        source[1]


@pytest.mark.parametrize("meta,match", [
    ({}, "'classes' must list 1 to 255"),
    ({"classes": ["a"], "colour": [[0, 0, 0]]}, r"unknown keys \['colour'\]"),
    ({"classes": ["a", "b"], "label_format": "color", "colors": [[0, 0, 0]]},
     "1 colours for 2 classes"),
    ({"classes": ["a", "b"], "label_format": "color"}, "colour labels need 'colors'"),
    ({"classes": ["a", "b"], "label_values": [0, 0]}, "given to two classes"),
    ({"classes": ["a"], "ignore_values": [0]}, r"values \[0\] are both a class's and ignored"),
])
def test_a_bad_description_is_refused_naming_the_file(tmp_path, meta, match):
    os.makedirs(tmp_path / "d")
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(custom.DatasetDescriptionError, match=match) as error:
        custom.Description(tmp_path / "d")
    assert "dataset.json" in str(error.value)
    assert isinstance(error.value, errors.DataError)  # one line from the command, no traceback


TWO = ["background", "road"]
LABEL_VALUES_FIX = '"label_values": [0, 1, [7, 9]]'
COLORS_FIX = '"colors": [[0, 0, 0], [128, 64, 128]]'


@pytest.mark.parametrize("field,meta,bad,fix", [  # bad: how the message shows the wrong value
    ("classes", {"classes": "road"}, '"road"', '"classes": ["background", "road"]'),  # not r, o..
    ("classes", {"classes": ["road", 1]}, "item: 1)", '"classes": ["background", "road"]'),
    ("classes", {"classes": ["road", "road"]}, "'road' twice", '"label_values": [0, [1, 2]]'),
    ("name", {"classes": TWO, "name": 3}, "got 3", '"name": "my roads"'),
    ("description", {"classes": TWO, "description": ["x"]}, '["x"]', '"description": "Dashcam'),
    ("label_values", {"classes": TWO, "label_values": 5}, "got 5", LABEL_VALUES_FIX),
    ("label_values", {"classes": TWO, "label_values": [0, 1.5]}, "'road': 1.5", LABEL_VALUES_FIX),
    ("label_values", {"classes": TWO, "label_values": [0, "1"]}, "'road': \"1\"",
     LABEL_VALUES_FIX),
    ("label_values", {"classes": TWO, "label_values": [0, [1, True]]}, "[1, true]",
     LABEL_VALUES_FIX),
    ("label_values", {"classes": TWO, "label_values": [0, []]}, "'road': []", LABEL_VALUES_FIX),
    ("label_values", {"classes": TWO, "label_values": [0, 256]}, "'road': 256", LABEL_VALUES_FIX),
    ("ignore_values", {"classes": TWO, "ignore_values": 255}, "got 255", '"ignore_values": [255]'),
    ("ignore_values", {"classes": TWO, "ignore_values": [-1]}, "item: -1)",  # was 255, silently
     '"ignore_values": [255]'),
    ("ignore_values", {"classes": TWO, "ignore_values": None}, "got null",  # [] or [255]?
     '"ignore_values": [255]'),
    ("ignore_values", {"classes": TWO, "ignore_values": ["255"]}, 'item: "255")',
     '"ignore_values": [255]'),
    ("splits", {"classes": TWO, "splits": ["train"]}, 'got ["train"]', '"splits": {"train": '),
    ("splits", {"classes": TWO, "splits": {"train": ["a"]}}, '{"train": ["a"]}',
     '"splits": {"train": '),
    ("colors", {"classes": TWO, "colors": "red"}, 'got "red"', COLORS_FIX),
    ("colors", {"classes": TWO, "colors": [[0, 0, 0], [1, 2]]}, "item: [1, 2])", COLORS_FIX),
    ("colors", {"classes": TWO, "colors": [[0, 0, 0], [0, 0, None]]}, "item: [0, 0, null])",
     COLORS_FIX),
    ("colors", {"classes": TWO, "colors": [[0, 0, 0], [0, 0, "9"]]}, 'item: [0, 0, "9"])',
     COLORS_FIX),
    ("ignore_colors", {"classes": TWO, "ignore_colors": [255, 255, 255]}, "item: 255)",
     '"ignore_colors": [[255, 255, 255]]'),
    ("ignore_colors", {"classes": TWO, "label_format": "color", "colors": [[0, 0, 0], [9, 9, 9]],
                       "ignore_colors": [[9, 9, 9]]}, "[9, 9, 9]",
     'Remove it from "ignore_colors"'),
])
def test_a_malformed_field_is_refused_naming_it_its_value_and_the_fix(tmp_path, field, meta, bad,
                                                                      fix):
    """No traceback and no silent cast: a wrong type or value in dataset.json is one message."""
    folder = _index_dataset(str(tmp_path / "mine"), meta, splits=(("train", 1),), size=(4, 4))
    with pytest.raises(custom.DatasetDescriptionError) as error:
        custom.Description(folder)
    message = str(error.value)
    assert message.startswith(f"{folder}/dataset.json: ") and f'"{field}"' in message
    assert bad in message and fix in message


def test_a_class_value_255_says_to_add_ignore_values(tmp_path):
    """A user's dataset.json: 255 is a class's value, and 255 is ignored unless told otherwise."""
    meta = {"classes": ["membrane", "cell"], "label_values": [0, 255]}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError) as error:
        custom.Description(tmp_path)
    message = str(error.value)
    assert isinstance(error.value, custom.DatasetDescriptionError)
    assert isinstance(error.value, errors.UserError)
    assert str(tmp_path / "dataset.json") in message and "255 is class 'cell'" in message
    assert 'Add "ignore_values": [] to dataset.json' in message
    line = errors.describe(error.value, "python -m deeplab_jax.data.check")
    assert line.startswith("python -m deeplab_jax.data.check: error: ") and "\n" not in line
    # The fix it gives works.
    (tmp_path / "dataset.json").write_text(json.dumps({**meta, "ignore_values": []}))
    assert custom.Description(tmp_path).value_to_class == {0: 0, 255: 1}


def test_folder_and_file_errors_are_user_errors_naming_their_fix(tmp_path):
    config = custom_config.get_config()  # no config.data.folder
    for load in (datasets.dataset_info, lambda data: check.open_split(data, "train")):
        with pytest.raises(errors.ConfigError, match="Add --config.data.folder=DIR"):
            load(config.data)
    folder = _index_dataset(str(tmp_path / "mine"))
    with pytest.raises(FileNotFoundError) as error:
        datasets.get_dataset(_data_config(folder), "test")
    assert isinstance(error.value, errors.MissingFileError)
    assert "split it has (['train', 'val'])" in str(error.value)
    assert "--config.data.eval_split" in str(error.value)
    _damage(folder)  # a value 5, a label of another size, a truncated image, unpaired files
    with pytest.raises(custom.PairingError, match="a label of the same name") as error:
        datasets.get_dataset(_data_config(folder), "train")
    assert isinstance(error.value, errors.MissingFileError)
    with open(f"{folder}/val/labels/val_01.png", "wb") as file:
        file.write(b"not a png")
    pairs = custom.split_pairs(custom.Description(folder), "train", strict=False)[0]
    source = custom.CustomFolder.from_pairs(custom.Description(folder), "train", pairs)
    val = datasets.get_dataset(_data_config(folder), "val")
    for load, kind, fix in [
            (lambda: source[0], labels.LabelValueError, '"ignore_values": [5, 255]'),
            (lambda: source[1], labels.SizeMismatchError, "nearest neighbour"),
            (lambda: source[2], custom.image_io.ImageReadError, "Replace it with a readable"),
            (lambda: val[1], labels.LabelReadError, "Replace it with a readable")]:
        with pytest.raises(kind, match=re.escape(fix)) as error:
            load()
        assert isinstance(error.value, errors.DataError), kind
    assert isinstance(error.value, OSError)  # a label that cannot be read: as before


def test_a_missing_description_says_what_to_write(tmp_path):
    with pytest.raises(custom.DatasetDescriptionError, match='"classes"'):
        datasets.dataset_info(_data_config(tmp_path))


def _damage(folder):
    """One of each problem in the train split (and nothing wrong in val)."""
    Image.fromarray(np.full((20, 28), 5, np.uint8)).save(f"{folder}/train/labels/train_00.png")
    Image.fromarray(np.zeros((20, 27), np.uint8)).save(f"{folder}/train/labels/train_01.png")
    with open(f"{folder}/train/images/train_02.png", "wb") as file:
        file.write(b"\x89PNG truncated")
    os.remove(f"{folder}/train/labels/train_03.png")  # an image without a label
    Image.fromarray(np.zeros((20, 28), np.uint8)).save(f"{folder}/train/labels/stray.png")


def test_check_reports_every_problem_with_its_count_and_first_file(tmp_path):
    folder = _index_dataset(str(tmp_path / "mine"), splits=(("train", 6), ("val", 2)))
    _damage(folder)
    config = custom_config.get_config()
    config.data.folder = folder
    config.data.canvas_size = (16, 32)  # every image is 20 high: too small
    result = check.check(config, ["train", "val"], str(tmp_path / "report"))
    assert not result["ok"]
    train_problems = result["splits"][0]["problems"]
    assert {kind: problem["count"] for kind, problem in train_problems.items()} == {
        "label_value": 1, "size_mismatch": 1, "unreadable": 1, "unlabelled": 1, "orphan": 1,
        "canvas": 2}  # train_04, train_05 (the others failed earlier)
    assert "train_00.png" in train_problems["label_value"]["first"]
    assert "[5]" in train_problems["label_value"]["message"]
    assert train_problems["unlabelled"]["first"].endswith("train_03.png")
    assert train_problems["orphan"]["first"].endswith("stray.png")
    assert "train_02.png" in train_problems["unreadable"]["message"]
    assert set(result["splits"][1]["problems"]) == {"canvas"}
    assert tuple(result["suggested_canvas"]) == (33, 33)
    assert result["splits"][1]["examples"] == 2 and result["splits"][1]["height_range"] == [20, 20]
    frequencies = result["splits"][1]["class_frequencies"]
    assert len(frequencies) == 3 and abs(sum(frequencies) - 1) < 1e-9
    for name in ("report.json", "examples.png", "class_frequencies.png"):
        assert os.path.getsize(tmp_path / "report" / name) > 100, name
    # The same problems stop training, naming the file: the checks are shared, not copied.
    with pytest.raises(custom.PairingError, match="1 image\\(s\\) without a label"):
        datasets.get_dataset(config.data, "train")


def test_check_command_exits_non_zero_on_problems_and_zero_on_clean_data(tmp_path):
    folder = _index_dataset(str(tmp_path / "mine"))
    command = [sys.executable, "-m", "deeplab_jax.data.check", "--config=configs/custom.py",
               f"--config.data.folder={folder}", "--config.data.canvas_size=(33,33)"]
    clean = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert "train: 4 examples" in clean.stdout
    _damage(folder)
    broken = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1 and "PROBLEM label value outside the classes: 1" in broken.stdout


@pytest.mark.slow  # a training run on a written folder (under 16 s idle)
def test_a_few_training_steps_on_your_own_data(tmp_path):
    folder = _index_dataset(str(tmp_path / "mine"), splits=(("train", 8), ("val", 3)),
                            size=(30, 26))
    config = tiny.get_config()
    config.data.update(name="custom", source="folder", folder=folder, train_split="train",
                       eval_split="val", canvas_size=(33, 33), crop_size=(33, 33),
                       num_workers=2)
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["num_images"] == 3 and len(results["per_class_iou"]) == 3
    assert list(results["per_class_iou_by_name"]) == ["background", "red", "green"]
