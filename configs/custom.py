"""Your own data: a folder with images, labels and a dataset.json (deeplab_jax/data/custom.py).

    # 1. Check it: every file read once, problems counted, pictures written.
    python -m deeplab_jax.data.check --config=configs/custom.py --config.data.folder=DIR \
        --output=DIR/check
    # 2. Train and evaluate DeepLabv3 on it (ImageNet backbone: see the README).
    python -m deeplab_jax.main --config=configs/custom.py --config.data.folder=DIR \
        --workdir=/tmp/deeplab_custom

The model is configs/voc.py's DeepLabv3-ResNet-101 at output stride 16 with the paper's
schedule and augmentation, shortened for a small dataset; every example is padded onto a
513x513 canvas, so images up to 513 pixels a side fit (the check says which canvas yours
need: --config.data.canvas_size='(H,W)', crops within it). Any field can be overridden on
the command line, e.g. another model: --config.model.architecture=pspnet.
"""
from configs import voc


def get_config():
    config = voc.get_config()
    data = config.data
    data.name = "custom"
    data.source = "folder"  # your folder (config.data.folder), read with numpy and pillow
    data.train_split, data.eval_split = "train", "val"
    data.canvas_size = (513, 513)  # every image is padded onto this; it must fit the largest
    data.crop_size = (513, 513)
    config.num_train_steps = 10_000
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 1_000
    return config
