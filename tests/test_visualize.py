"""Tests for deeplab_jax.visualize: palettes, colourising, overlays, panels, PNG files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deeplab_jax.data import palettes
from deeplab_jax.reporting import visualize


def test_voc_palette_known_entries():
    palette = palettes.voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    # Values from the VOC devkit's labelcolormap / the SegmentationClass PNG palettes.
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0),
                4: (0, 0, 128), 8: (64, 0, 0), 12: (64, 0, 128), 15: (192, 128, 128),
                20: (0, 64, 128), 255: (224, 224, 192)}
    for index, rgb in expected.items():
        assert tuple(palette[index]) == rgb, index


def test_palette_from_colors():
    palette = palettes.palette_from_colors([(10, 20, 30), (40, 50, 60)],
                                            ignore_color=(1, 2, 3))
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette[:2], [[10, 20, 30], [40, 50, 60]])
    np.testing.assert_array_equal(palette[2:255], 0)
    np.testing.assert_array_equal(palette[255], [1, 2, 3])


def test_colorize_tiny_label():
    palette = palettes.voc_palette()
    label = np.array([[0, 1], [15, 255]], dtype=np.int32)
    out = visualize.colorize(label, palette)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(
        out, [[[0, 0, 0], [128, 0, 0]], [[192, 128, 128], [224, 224, 192]]])


@pytest.mark.parametrize("bad", [300, -1])
def test_colorize_rejects_out_of_range(bad):
    label = np.array([[0, bad]], dtype=np.int32)
    with pytest.raises(ValueError, match=str(bad)):
        visualize.colorize(label, palettes.voc_palette())


def test_overlay_blends_and_keeps_ignored_pixels():
    palette = palettes.palette_from_colors([(0, 0, 0), (200, 100, 0)])
    image = np.array([[[100, 100, 100], [50, 60, 70], [9, 8, 7]]], dtype=np.uint8)
    label = np.array([[1, 0, 255]], dtype=np.int32)
    out = visualize.overlay(image, label, palette, alpha=0.5, ignore_label=255)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [150, 100, 50])  # halfway to (200, 100, 0)
    np.testing.assert_array_equal(out[0, 1], [25, 30, 35])  # halfway to black
    np.testing.assert_array_equal(out[0, 2], [9, 8, 7])  # ignored: image unchanged
    # Without an ignore label the 255 pixel is blended with palette[255] (white).
    out_all = visualize.overlay(image, label, palette, alpha=0.5, ignore_label=None)
    np.testing.assert_array_equal(out_all[0, 2], [132, 132, 131])


def test_prediction_panel_layout():
    rng = np.random.default_rng(0)
    n, h, w, gap = 3, 4, 5, 2
    images = rng.integers(0, 256, (n, h, w, 3)).astype(np.float32)  # float input
    labels = rng.integers(0, 21, (n, h, w)).astype(np.int32)
    labels[0, 0, 0] = 255
    predictions = rng.integers(0, 21, (n, h, w)).astype(np.int32)
    palette = palettes.voc_palette()

    panel = visualize.prediction_panel(images, labels, predictions, palette, gap=gap)
    assert panel.shape == (n * h + (n - 1) * gap, 3 * w + 2 * gap, 3)
    assert panel.dtype == np.uint8
    for row in range(n):
        top = row * (h + gap)
        tiles = [panel[top:top + h, col * (w + gap):col * (w + gap) + w] for col in range(3)]
        np.testing.assert_array_equal(tiles[0], images[row].astype(np.uint8))
        np.testing.assert_array_equal(tiles[1], palette[labels[row]])
        np.testing.assert_array_equal(tiles[2], palette[predictions[row]])
    # Gaps are white.
    np.testing.assert_array_equal(panel[h:h + gap], 255)
    np.testing.assert_array_equal(panel[:, w:w + gap], 255)
    np.testing.assert_array_equal(panel[:, 2 * w + gap:2 * w + 2 * gap], 255)

    limited = visualize.prediction_panel(images, labels, predictions, palette,
                                         max_rows=2, gap=gap)
    np.testing.assert_array_equal(limited, panel[:2 * h + gap])


def test_save_png_creates_parents(tmp_path):
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "a" / "b" / "image.png"
    visualize.save_png(path, image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


def test_indexed_png_round_trip(tmp_path):
    label = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.int64)
    palette = palettes.voc_palette()
    path = tmp_path / "sub" / "label.png"
    visualize.save_indexed_png(path, label, palette)

    with Image.open(path) as image:
        assert image.mode == "P"
        # Viewers see the palette colours; the stored palette is ours.
        np.testing.assert_array_equal(
            np.asarray(image.convert("RGB")), palette[label])
    loaded = visualize.load_indexed_png(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (2, 3)
    np.testing.assert_array_equal(loaded, label)


def test_load_indexed_png_rejects_rgb(tmp_path):
    path = tmp_path / "rgb.png"
    visualize.save_png(path, np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        visualize.load_indexed_png(path)
