"""Reading any image file as RGB uint8, as a viewer shows it, with errors that name the file.

Greyscale, palette, RGBA (alpha dropped), CMYK, 16-bit and float images become uint8
[H, W, 3] RGB; the EXIF orientation is applied, so predictions line up with what a viewer
shows. A file that cannot be decoded (truncated, empty, not an image, a decompression bomb)
raises `ImageReadError` naming it; truncated files are never half-decoded
(PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` stays False).
"""
from __future__ import annotations

import contextlib
import glob
import os
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from deeplab_jax import errors

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pnm")
EXIF_ORIENTATION = 0x0112
# The fix of an unreadable file: it is truncated, empty or not an image (an HTML error page).
REPLACE_IT = "Replace it with a readable copy (download or export it again), or remove it."


class ImageReadError(errors.DataError):
    """An input file that is not a readable image; the message names the file."""


def find_images(pattern: str) -> list[str]:
    """The image files of `pattern`: a file, a folder (its images, sorted) or a glob.

    Raises:
      MissingFileError (a FileNotFoundError): nothing matches.
    """
    pattern = os.path.expanduser(pattern)
    if os.path.isfile(pattern):
        return [pattern]
    if os.path.isdir(pattern):
        paths = sorted(os.path.join(pattern, name) for name in os.listdir(pattern)
                       if name.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(pattern, name)))
        if not paths:
            raise errors.MissingFileError(
                f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder {pattern}. Give "
                "a folder holding images with one of these extensions, an image file, or a "
                "glob pattern such as 'photos/*.jpg' (quoted).")
        return paths
    paths = sorted(path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path))
    if not paths:
        raise errors.MissingFileError(
            f"{pattern}: no such file or folder, and no file matches it as a glob pattern. "
            "Check the path (a relative one starts from the current folder), or give a folder "
            "of images or a pattern such as 'photos/*.jpg' (quoted).")
    return paths


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL image as uint8 [H, W, 3] RGB.

    Greyscale and palette images are expanded, alpha is dropped, 16-bit and 32-bit integer
    images are scaled from 0..65535 (32-bit ones only when they exceed 255), float images
    from [0, 1] when they lie in it (otherwise clipped to [0, 255]).
    """
    if image.mode in ("RGB",):
        return np.asarray(image, dtype=np.uint8)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0  # 65535 -> 255
        elif image.mode == "F" and values.size and 0.0 <= values.min() and values.max() <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode in ("P", "PA", "LA", "La", "RGBA", "RGBa"):
        image = image.convert("RGBA")  # palette transparency resolved, then alpha dropped
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


@contextlib.contextmanager
def opened(path: str) -> Iterator[Image.Image]:
    """`Image.open(path)`; any error while it is open becomes `ImageReadError` naming `path`.

    PIL's decoders raise many types on bad bytes (OSError, SyntaxError, ValueError,
    EOFError, struct.error, DecompressionBombError...), so every exception is caught.
    """
    try:
        with Image.open(path) as image:
            yield image
    except Exception as error:  # pylint: disable=broad-except
        raise ImageReadError(f"Cannot read the image {path}: {error}. {REPLACE_IT}") from error


def load_image(path: str) -> np.ndarray:
    """Reads `path` as uint8 [H, W, 3] RGB, EXIF orientation applied.

    Raises:
      ImageReadError: naming the file, if it is not a readable image.
    """
    with opened(path) as image:
        pixels = to_rgb_uint8(ImageOps.exif_transpose(image))
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or not pixels.size:
        raise ImageReadError(f"Cannot read the image {path}: decoded to {pixels.dtype} "
                             f"{pixels.shape}, not a non-empty uint8 RGB image. {REPLACE_IT}")
    return pixels


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of `path` as `load_image` returns it, from the header alone."""
    with opened(path) as image:
        width, height = image.size
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    # EXIF orientations 5-8 rotate by 90 degrees: exif_transpose swaps the sides.
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def decodes_unchanged(path: str) -> bool:
    """True when `path`'s own bytes decode to exactly `load_image(path)`.

    That is an RGB JPEG or PNG without an EXIF rotation: `load_image` then converts nothing,
    so a dataset can store the file as it is (a 360x480 JPEG: ~40 KB, where the PNG of its
    pixels is ~400 KB and slower to decode) and a reader decoding those bytes with PIL gets
    the same pixels.
    """
    with opened(path) as image:
        return (image.format in ("JPEG", "PNG") and image.mode == "RGB"
                and image.getexif().get(EXIF_ORIENTATION, 1) == 1)
