"""A small random dataset source for evaluation tests: odd sizes, 3 classes, ignore pixels."""
import numpy as np

from deeplab_jax.data import palettes

NUM_CLASSES = 3


class RandomSource:
    class_names = ("a", "b", "c")
    palette = palettes.voc_palette()
    num_classes = NUM_CLASSES

    def __init__(self, num_examples, seed=0):
        rng = np.random.default_rng(seed)
        self.examples = []
        for _ in range(num_examples):
            height, width = rng.integers(9, 17, size=2)
            label = rng.integers(0, NUM_CLASSES, size=(height, width)).astype(np.uint8)
            label[0, 0] = 255
            self.examples.append({"image": rng.integers(0, 256, (height, width, 3), np.uint8),
                                  "label": label})

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]
