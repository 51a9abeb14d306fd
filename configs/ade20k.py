"""DeepLabv3, ResNet-50, output stride 8, ADE20K SceneParsing (150 classes), as mmsegmentation.

    python -m deeplab_jax.main --config=configs/ade20k.py --workdir=/tmp/deeplab_ade20k \
        --config.model.pretrained_backbone=/data/resnet_v2_50.tar.gz

The data (ADEChallengeData2016.zip, public) is downloaded and prepared by our TFDS builder
(deeplab_jax/data/ade20k_tfds.py) on first use, or read from --config.data.manual_dir; without
TensorFlow, --config.data.source=folder --config.data.folder=FOLDER (holding the extracted
ADEChallengeData2016/).

mmsegmentation's deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py (1.x name; 0.x:
configs/deeplabv3/deeplabv3_r50-d8_512x512_80k_ade20k.py L2-7) combines these files of
open-mmlab/mmsegmentation, whose values we take:
- configs/_base_/datasets/ade20k.py @f6c5caa: crop (512, 512) (L4); RandomResize
  scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio (L8-12); RandomCrop with
  cat_max_ratio=0.75 (L13); RandomFlip 0.5 (L14); PhotoMetricDistortion (L15); test-time
  Resize (2048, 512) keep_ratio (L20); batch 4 per GPU (L27) on 4 GPUs ("4xb4") = 16;
- configs/_base_/schedules/schedule_80k.py @f950c44: SGD lr 0.01, momentum 0.9, weight decay
  5e-4 (L2); poly power 0.9, min_lr 1e-4 (L5); 80000 iterations (L7);
- configs/_base_/models/deeplabv3_r50-d8.py @2fc821e: ResNetV1c-50 with dilations (1, 1, 2, 4),
  strides (1, 2, 1, 1), i.e. output stride 8 (L7-12); ASPPHead with 512 channels and
  dilations (1, 12, 24, 36) (L21-22), dropout 0.1 (L23); an FCN auxiliary head on stage 3
  with loss weight 0.4 (L29-41); SyncBN with PyTorch's default momentum 0.1 (L2).

What differs here, and why:
- Image sizes. Our pipeline pads every example onto one fixed canvas before the on-device
  random scale and crop, so each image is first resized on the host, keeping its aspect
  ratio, to short side 512 with the long side at most 1024 (`data.resize_to_fit`,
  `rescale.ResizedToFit`, mmsegmentation's keep-ratio rule), and padded onto 1025x1025
  (either orientation fits). mmsegmentation's (2048, 512) allows a long side up to 2048: the
  two agree for every image with aspect ratio <= 2 (nearly all of ADE20K); wider panoramas
  are made smaller here. Random scale 0.5-2.0 then applies on the device, as their ratio range.
- Evaluation runs on the resized image and label (label resized by nearest neighbour);
  mmsegmentation resizes its prediction back to the original annotation.
- Crop 513x513 instead of 512x512: the 32k+1 size this codebase uses everywhere, so that
  aligned-corners upsampling is exact.
- Not implemented: RandomCrop's cat_max_ratio (re-drawing a crop in which one class covers
  more than 75% of the pixels), PhotoMetricDistortion, the head's dropout 0.1, the poly
  schedule's floor min_lr 1e-4 (ours decays to 0), weight decay on BN and bias parameters
  (ours decays conv kernels only), ResNetV1c's deep stem (ours is ResNet-v2). The ImageNet
  weights are TF-slim's resnet_v2_50, not mmsegmentation's resnet50_v1c.
mmsegmentation reports 42.42 val mIoU (43.28 with multi-scale and flip) for this model and
schedule (configs/deeplabv3/README.md @0999c55, ADE20K table). No run of this config has been
made yet: what it reaches with the differences above is unknown.
"""
from configs import voc


def get_config():
    config = voc.get_config()

    data = config.data
    data.name = "ade20k"
    data.train_split, data.eval_split = "train", "val"  # 20210 / 2000 images
    # Each image resized (aspect ratio kept) to short side 512, long side <= 1024 on the host;
    # any orientation then fits the 1025x1025 canvas (32k+1).
    data.resize_to_fit = (512, 1024)
    data.canvas_size = (1025, 1025)
    data.crop_size = (513, 513)  # mmseg's 512x512, as 32k+1
    data.min_scale, data.max_scale = 0.5, 2.0  # mmseg's ratio_range
    data.scale_step = 0.0  # continuous, as mmseg's RandomResize draws its ratio
    data.batch_size = 16  # 4 GPUs x 4 images

    model = config.model
    model.depth = 50
    model.output_stride = 8  # "d8": dilations (1, 1, 2, 4), strides (1, 2, 1, 1)
    model.multi_grid = (1, 1, 1)  # mmseg's ResNetV1c has no multi-grid
    model.deeplabv3.atrous_rates = (12, 24, 36)  # ASPPHead dilations (1, 12, 24, 36)
    model.deeplabv3.aspp_channels = 512  # ASPPHead channels=512
    model.aux_loss_weight = 0.4  # FCNHead on block3, loss_weight=0.4
    model.bn_momentum = 0.9  # PyTorch BatchNorm momentum 0.1 is a decay of 0.9

    optim = config.optim
    optim.base_learning_rate = 0.01
    optim.poly_power = 0.9
    optim.momentum = 0.9
    optim.weight_decay = 5e-4

    config.eval.batch_size = 8
    config.num_train_steps = 80_000
    config.eval_every_steps = 8_000  # mmseg's val_interval
    config.checkpoint_every_steps = 8_000
    return config
