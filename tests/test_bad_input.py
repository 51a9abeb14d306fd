"""Bad input: wrong label values, unreadable files, odd image modes, small images, mismatches.

Each case ends in a valid example or in an error that names the file (or the example); the
property-based tests (hypothesis) throw random sizes, dtypes and bytes at the same functions.
"""
import functools
import io
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from deeplab_jax.data import augment, camvid, image_io, input_pipeline, labels
from deeplab_jax.models.segmenter import MEAN_PIXEL

PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


class ArraySource:
    """Examples from arrays, with the attributes of a dataset source."""

    num_classes = 21
    ignore_label = 255

    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        image, label = self.examples[index]
        return {"image": image, "label": label}


def _example(height=6, width=7, value=1, dtype=np.uint8):
    return (np.full((height, width, 3), 100, np.uint8), np.full((height, width), value, dtype))


def _first_batch(source, canvas=(8, 8), num_workers=1):
    return next(input_pipeline.prefetch(input_pipeline.train_batches(
        source, global_batch_size=len(source), seed=0, start_step=0, canvas_size=canvas,
        num_workers=num_workers)))


# ------------------------------------------------------------------------------ label values

@pytest.mark.parametrize("value,dtype", [(21, np.uint8), (200, np.uint8), (-1, np.int32),
                                         (21, np.int64)])
def test_label_outside_the_classes_is_refused_naming_example_and_value(value, dtype):
    source = ArraySource([_example()] * 3 + [_example(value=value, dtype=dtype)])
    with pytest.raises(labels.LabelValueError,
                       match=rf"Example 3 of ArraySource: label values \[{value}\] are neither "
                             r"a class index 0\.\.20 nor the ignore label 255"):
        _first_batch(source, num_workers=2)


def test_valid_labels_and_255_pass():
    source = ArraySource([_example(value=0), _example(value=20), _example(value=255),
                          _example(value=3, dtype=np.int32)])
    batch = _first_batch(source)
    assert sorted(np.unique(batch["label"][:, :6, :7]).tolist()) == [0, 3, 20, 255]


def test_label_values_are_never_cast_silently():
    image, _ = _example()
    label = np.zeros((6, 7), np.int32)
    label[2, 3] = -1  # would become 255 (ignored) in a uint8 canvas
    with pytest.raises(ValueError, match=r"label values -1\.\.0 do not fit uint8"):
        augment.pad_to_canvas(image, label, (8, 8))
    with pytest.raises(ValueError, match="label dtype float32"):
        augment.pad_to_canvas(image, np.zeros((6, 7), np.float32), (8, 8))
    with pytest.raises(ValueError, match="image dtype float32"):
        augment.pad_to_canvas(image.astype(np.float32), np.zeros((6, 7), np.uint8), (8, 8))


# ------------------------------------------------------------------------ unreadable files

def _camvid_folder(root: Path, num_examples=4) -> Path:
    lines = []
    for index in range(num_examples):
        name = f"frame_{index}"
        (root / "train").mkdir(parents=True, exist_ok=True)
        (root / "trainannot").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 16, 3), 40 * index, np.uint8)).save(
            root / "train" / f"{name}.png")
        Image.fromarray(np.full((12, 16), index, np.uint8)).save(
            root / "trainannot" / f"{name}.png")
        lines.append(f"train/{name}.png trainannot/{name}.png\n")
    (root / "train.txt").write_text("".join(lines))
    return root


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "empty": b"",
                      "not an image": b"<html>404 Not Found</html>"}[how])


@pytest.mark.parametrize("how", ["truncated", "empty", "not an image"])
@pytest.mark.parametrize("which", ["train/frame_2.png", "trainannot/frame_1.png"])
def test_unreadable_file_stops_the_pipeline_naming_it(tmp_path, how, which):
    root = _camvid_folder(tmp_path)
    _corrupt(root / which, how)
    source = camvid.CamVidFolder(root, "train")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # never a half-decoded image
    # Through the decoding threads and the prefetch thread, to the training loop.
    with pytest.raises((image_io.ImageReadError, OSError), match=rf"Cannot read the "
                                                                 rf"(label )?image .*{which}"):
        _first_batch(source, canvas=(16, 16), num_workers=2)


def test_image_and_label_sizes_that_differ_are_an_error_not_a_fill(tmp_path):
    root = _camvid_folder(tmp_path)
    Image.fromarray(np.zeros((12, 15), np.uint8)).save(
        root / "trainannot" / "frame_3.png")
    with pytest.raises(ValueError, match=r"frame_3\.png is 12x16 .*label .*frame_3\.png is 12x15"):
        _first_batch(camvid.CamVidFolder(root, "train"), canvas=(16, 16))
    source = ArraySource([(np.zeros((6, 7, 3), np.uint8), np.zeros((6, 6), np.uint8))])
    with pytest.raises(ValueError, match=r"Example 0 of ArraySource: image size \(6, 7\) != "
                                         r"label size \(6, 6\)"):
        _first_batch(source)


# ------------------------------------------------------------------------------ image modes

def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _load_bytes(tmp_path, data: bytes, name="x") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    return image_io.load_image(str(path))


def test_every_image_mode_becomes_three_channel_uint8(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 6), np.uint8)
    rgb = rng.integers(0, 256, (5, 6, 3), np.uint8)
    cases = {
        "gray.png": (Image.fromarray(gray), "PNG", np.repeat(gray[..., None], 3, -1)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, gray])), "PNG", rgb),
        "la.png": (Image.fromarray(np.dstack([gray, gray])), "PNG",
                   np.repeat(gray[..., None], 3, -1)),
        "bilevel.png": (Image.fromarray(gray > 127), "PNG",
                        np.repeat(np.where(gray > 127, 255, 0)[..., None], 3, -1)),
        "cmyk.tiff": (Image.fromarray(rgb).convert("CMYK"), "TIFF",
                      np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB"))),
    }
    for name, (image, fmt, expected) in cases.items():
        loaded = _load_bytes(tmp_path, _saved(image, fmt), name)
        assert loaded.dtype == np.uint8 and loaded.shape == (5, 6, 3), name
        np.testing.assert_array_equal(loaded, expected, err_msg=name)
    # CMYK JPEG (print workflows) and 16-bit greyscale PNG (medical, depth, scientific)
    cmyk = _load_bytes(tmp_path, _saved(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
                       "cmyk.jpg")
    assert cmyk.shape == (5, 6, 3) and cmyk.dtype == np.uint8
    deep = rng.integers(0, 65536, (5, 6)).astype(np.uint16)
    loaded = _load_bytes(tmp_path, _saved(Image.fromarray(deep), "PNG"), "deep.png")
    np.testing.assert_array_equal(loaded[..., 0], np.rint(deep / 257.0).astype(np.uint8))


# ------------------------------------------------------------------- images below the crop

def test_example_smaller_than_the_crop_is_padded_with_mean_pixel_and_255():
    image = np.random.default_rng(1).integers(0, 256, (20, 20, 3), np.uint8)
    label = np.random.default_rng(2).integers(0, 5, (20, 20)).astype(np.uint8)
    source = ArraySource([(image, label)] * 8)
    source.num_classes = 5
    batch = _first_batch(source, canvas=(33, 33))
    kwargs = dict(crop_size=(33, 33), pad_pixel=MEAN_PIXEL, ignore_label=255)
    out_image, out_label = jax.jit(functools.partial(
        augment.augment_batch, min_scale=1.0, max_scale=1.0, flip=False, **kwargs))(
        jax.random.key(0), batch["image"], batch["label"], batch["size"])
    out_image, out_label = np.asarray(out_image), np.asarray(out_label)
    np.testing.assert_array_equal(out_label[:, :20, :20], np.broadcast_to(label, (8, 20, 20)))
    assert (out_label[:, 20:, :] == 255).all() and (out_label[:, :, 20:] == 255).all()
    assert (out_image[:, 20:, :] == MEAN_PIXEL).all() and (out_image[:, :, 20:] == MEAN_PIXEL).all()
    # With the paper's random scales (0.5-2.0) too: padding is always 255 / the mean pixel.
    out_image, out_label = jax.jit(functools.partial(augment.augment_batch, **kwargs))(
        jax.random.key(1), batch["image"], batch["label"], batch["size"])
    out_image, out_label = np.asarray(out_image), np.asarray(out_label)
    assert set(np.unique(out_label)) <= set(range(5)) | {255}
    assert (out_image[out_label == 255] == MEAN_PIXEL).all()  # the example has no 255


# ------------------------------------------------------------------ property-based (random)

def _valid_encodings():
    """Small images of random modes and sizes, encoded in the formats datasets use."""
    modes = st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "I;16", "1", "CMYK"])
    formats = st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM"])

    @st.composite
    def encoded(draw):
        mode, fmt = draw(modes), draw(formats)
        height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        seed = draw(st.integers(0, 2**16))
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), np.uint8)
        rgba = Image.fromarray(pixels)
        if mode == "I;16":
            image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
        else:
            image = rgba.convert(mode)
        try:
            return _saved(image, fmt)
        except (OSError, ValueError, KeyError):  # this format cannot store this mode
            return _saved(rgba, "PNG")
    return encoded()


@st.composite
def _damaged(draw):
    """A valid encoding, then truncated, bit-flipped or spliced with random bytes."""
    data = bytearray(draw(_valid_encodings()))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert"]))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _check_image_or_named_error(tmp_path, data):
    path = tmp_path / "fuzzed.img"
    path.write_bytes(data)
    try:
        image = image_io.load_image(str(path))
    except image_io.ImageReadError as error:
        assert str(path) in str(error)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 1 and image.shape[1] >= 1


@PROPERTY
@given(data=st.one_of(st.binary(max_size=256), _valid_encodings(), _damaged()))
def test_any_bytes_give_an_rgb_image_or_an_error_naming_the_file(tmp_path_factory, data):
    _check_image_or_named_error(tmp_path_factory.mktemp("fuzz"), data)


_DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64,
                           np.float32, np.float64, np.bool_])


@st.composite
def _arrays(draw, ndim):
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    dtype = draw(_DTYPES)
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).integers(-300, 300, shape)
    return values.astype(dtype)


@st.composite
def _near_valid_examples(draw):
    """Mostly well-formed (uint8 RGB, an integer label of the same size) with one defect or
    none: the valid path gets exercised, not only the errors."""
    height, width = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    channels = draw(st.sampled_from([3, 3, 3, 1, 4]))
    image = rng.integers(0, 256, (height, width, channels)).astype(
        draw(st.sampled_from([np.uint8, np.uint8, np.uint8, np.float32, np.int16])))
    label_size = draw(st.sampled_from([(height, width)] * 4 + [(height, width + 1)]))
    low, high = draw(st.sampled_from([(0, 256), (0, 256), (-1, 2), (250, 300)]))
    label = rng.integers(low, high, label_size).astype(draw(_DTYPES))
    return image, label


@PROPERTY
@given(example=st.one_of(_near_valid_examples(),
                         st.tuples(st.one_of(_arrays(3), _arrays(2), _arrays(4)),
                                   st.one_of(_arrays(2), _arrays(3)))),
       canvas=st.tuples(st.integers(1, 12), st.integers(1, 12)))
def test_pad_to_canvas_keeps_its_invariants_or_raises_value_error(example, canvas):
    image, label = example
    try:
        out_image, out_label, size = augment.pad_to_canvas(image, label, canvas)
    except ValueError:
        return
    h, w = image.shape[:2]
    assert image.dtype == np.uint8 and image.shape == (h, w, 3)
    assert out_image.shape == (*canvas, 3) and out_image.dtype == np.uint8
    assert out_label.shape == canvas and out_label.dtype == np.uint8
    assert size.tolist() == [h, w] and size.dtype == np.int32
    np.testing.assert_array_equal(out_image[:h, :w], image)
    np.testing.assert_array_equal(out_label[:h, :w], label)  # no value changed by a cast
    assert (out_label[h:] == 255).all() and (out_label[:, w:] == 255).all()


@PROPERTY
@given(label=st.one_of(_arrays(2), _arrays(1)), num_classes=st.integers(1, 30))
def test_label_check_accepts_exactly_the_classes_and_255(label, num_classes):
    valid = label.dtype.kind in "ui" and np.isin(label, list(range(num_classes)) + [255]).all()
    try:
        assert labels.check_label_values(label, num_classes, 255, "f.png") is label
        assert valid
    except labels.LabelValueError as error:
        assert not valid and "f.png" in str(error)


_AUGMENT = jax.jit(functools.partial(augment.random_scale_crop_flip, crop_size=(9, 11),
                                     pad_pixel=MEAN_PIXEL, ignore_label=255))


@PROPERTY
@given(height=st.integers(1, 12), width=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_augmentation_keeps_labels_sizes_and_pixel_range(height, width, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), np.uint8)
    label = rng.choice(np.array([0, 1, 4, 255], np.uint8), (height, width))
    canvas_image, canvas_label, size = augment.pad_to_canvas(image, label, (12, 12))
    out_image, out_label = _AUGMENT(jax.random.key(seed), canvas_image, canvas_label, size)
    out_image, out_label = np.asarray(out_image), np.asarray(out_label)
    assert out_image.shape == (9, 11, 3) and out_label.shape == (9, 11)
    assert set(np.unique(out_label)) <= set(np.unique(label)) | {255}  # nearest: no new ids
    assert np.isfinite(out_image).all()
    low, high = min(image.min(), MEAN_PIXEL), max(image.max(), MEAN_PIXEL)
    assert (out_image >= low - 1e-3).all() and (out_image <= high + 1e-3).all()
