"""Synthetic shapes: a segmentation dataset generated in code, for laptops and tests.

Each image holds a few filled shapes (disk, square, triangle, cross) at random positions,
sizes and rotations over a textured background with clutter. Class is decided by shape
alone: the colour and texture of every shape and of the background are drawn from one
distribution, independently of the class. A per-pixel classifier (1x1 convolutions only)
therefore cannot tell a disk's pixels from a square's, or either from the background;
only spatial context can, which is what atrous convolution and ASPP provide.

As in PASCAL VOC, a thin band along object boundaries is labelled 255 (ignore).
Example i of a split is a pure function of (split seed, i), so the data needs no storage,
and any example can be regenerated on its own.
"""
from __future__ import annotations

import numpy as np

from deeplab_jax import errors
from deeplab_jax.data import palettes

CLASS_NAMES = ("background", "disk", "square", "triangle", "cross")
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_LABEL = 255
SPLIT_SEEDS = {"train": 0, "val": 1}  # Fixed: the val split never changes.
MAX_PLACEMENT_TRIES = 50
SHAPE_GAP = 2  # pixels of background kept between shapes
MIN_CONTRAST = 60  # least difference of a shape's colour from the background's, one channel


def _base_color(rng: np.random.Generator, avoid: np.ndarray | None) -> np.ndarray:
    """A random colour at least MIN_CONTRAST from `avoid` in one channel (edges stay visible)."""
    while True:
        color = rng.uniform(30, 225, size=3)
        if avoid is None or np.abs(color - avoid).max() >= MIN_CONTRAST:
            return color


def _texture(rng: np.random.Generator, size: int, coords: np.ndarray,
             base: np.ndarray) -> np.ndarray:
    """Colour `base` with random stripes and noise, float [size, size, 3] in [0, 255]."""
    angle = rng.uniform(0, np.pi)
    frequency = rng.uniform(0.15, 0.8)
    stripes = np.sin(frequency * (coords[0] * np.cos(angle) + coords[1] * np.sin(angle)))
    contrast = rng.uniform(0, 30, size=3)
    noise = rng.normal(0, rng.uniform(2, 8), size=(size, size, 3))
    return np.clip(base + stripes[..., None] * contrast + noise, 0, 255)


def _shape_mask(kind: str, rng: np.random.Generator, coords: np.ndarray, size: int,
                max_rotation: float) -> np.ndarray:
    """Boolean [size, size] mask of one shape of the given kind at a random pose."""
    radius = rng.uniform(0.14, 0.26) * size
    center = rng.uniform(radius, size - radius, size=2)
    angle = rng.uniform(-max_rotation, max_rotation)
    dy, dx = coords[0] - center[0], coords[1] - center[1]
    # Rotate into the shape's frame; a disk is rotation invariant.
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if kind == "disk":
        return u**2 + v**2 <= radius**2
    if kind == "square":
        half = radius * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "triangle":
        # Equilateral triangle inscribed in a circle of 1.3x the radius (area near the others).
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            theta = angle + 2 * np.pi * k / 3 + np.pi / 2
            inside &= dx * np.cos(theta) + dy * np.sin(theta) <= 0.65 * radius
        return inside
    if kind == "cross":
        arm = radius * 0.35
        return ((np.abs(u) <= radius) & (np.abs(v) <= arm)) | (
            (np.abs(v) <= radius) & (np.abs(u) <= arm))
    raise ValueError(f"unknown shape {kind!r}")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a square of side 2 * radius + 1."""
    padded = np.pad(mask, radius)
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + height, dx:dx + width]
    return out


def _boundary(label: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds more than one label."""
    padded = np.pad(label, 1, mode="edge")
    height, width = label.shape
    boundary = np.zeros(label.shape, bool)
    for dy in range(3):
        for dx in range(3):
            boundary |= padded[dy:dy + height, dx:dx + width] != label
    return boundary


def generate_example(seed: int, index: int, size: int = 57, max_shapes: int = 3,
                     max_rotation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Generates example `index` of the split with `seed`.

    Returns:
      image: uint8 [size, size, 3].
      label: uint8 [size, size], values in 0..NUM_CLASSES-1 and IGNORE_LABEL.
    """
    rng = np.random.default_rng([seed, index])
    coords = np.mgrid[0:size, 0:size].astype(np.float32)
    background_color = _base_color(rng, None)
    image = _texture(rng, size, coords, background_color)
    label = np.zeros((size, size), np.uint8)

    # Clutter on the background: thin lines and small blobs, labelled background.
    for _ in range(rng.integers(1, 4)):
        color = rng.uniform(0, 255, size=3)
        if rng.random() < 0.5:
            point = rng.uniform(0, size, size=2)
            angle = rng.uniform(0, np.pi)
            distance = np.abs((coords[0] - point[0]) * np.cos(angle)
                              - (coords[1] - point[1]) * np.sin(angle))
            clutter = distance <= rng.uniform(0.5, 1.5)
        else:
            point = rng.uniform(0, size, size=2)
            clutter = ((coords[0] - point[0])**2 + (coords[1] - point[1])**2
                       <= rng.uniform(1, 3)**2)
        image[clutter] = color

    # Shapes, apart from each other (a rejected pose is redrawn) so each stays whole.
    num_shapes = rng.integers(1, max_shapes + 1)
    occupied = np.zeros((size, size), bool)  # placed shapes grown by SHAPE_GAP
    for _ in range(MAX_PLACEMENT_TRIES):
        if num_shapes == 0:
            break
        class_index = int(rng.integers(1, NUM_CLASSES))
        mask = _shape_mask(CLASS_NAMES[class_index], rng, coords, size, max_rotation)
        if np.any(mask & occupied):
            continue
        image[mask] = _texture(rng, size, coords, _base_color(rng, background_color))[mask]
        label[mask] = class_index
        occupied |= _dilate(mask, SHAPE_GAP)
        num_shapes -= 1

    label[_boundary(label)] = IGNORE_LABEL
    return image.round().astype(np.uint8), label


class SyntheticShapes:
    """One split of the synthetic dataset, as a random-access sequence of examples.

    Examples are generated once and kept in memory (a few MB per thousand 96x96 images).
    """

    class_names = CLASS_NAMES
    num_classes = NUM_CLASSES
    ignore_label = IGNORE_LABEL
    palette = palettes.voc_palette()

    def __init__(self, split: str, num_examples: int, image_size: int = 57,
                 max_shapes: int = 3, max_rotation: float = 0.0):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"unknown synthetic split {split!r}; use one of {list(SPLIT_SEEDS)}.")
        examples = [generate_example(SPLIT_SEEDS[split], i, image_size, max_shapes,
                                     max_rotation)
                    for i in range(num_examples)]
        self.images = np.stack([image for image, _ in examples])
        self.labels = np.stack([label for _, label in examples])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self.images[index], "label": self.labels[index]}


# -- The dataset registry's interface (data/datasets.py) ---------------------------------

def dataset_info(data_config) -> dict:
    del data_config
    return {"class_names": CLASS_NAMES, "palette": SyntheticShapes.palette,
            "ignore_label": IGNORE_LABEL}


def generated_source(data_config, split: str) -> SyntheticShapes:
    """The split generated from `config.data.synthetic` (any config.data.source)."""
    settings = data_config.synthetic
    num_examples = {"train": settings.num_train_examples, "val": settings.num_val_examples}
    if split not in num_examples:
        raise errors.ConfigError(f"synthetic_shapes has splits 'train' and 'val', not {split!r}: "
                                 "set --config.data.train_split / --config.data.eval_split "
                                 "to one of them.")
    return SyntheticShapes(split, num_examples[split], image_size=settings.image_size,
                           max_shapes=settings.max_shapes)
