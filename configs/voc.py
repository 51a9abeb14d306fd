"""DeepLabv3, ResNet-101, PASCAL VOC 2012 train_aug, output stride 16: the paper's setup.

    python -m deeplab_jax.main --config=configs/voc.py --workdir=/tmp/deeplab_voc

Chen et al. 2017, Sec. 4.1: poly learning rate from 0.007 with power 0.9, crop 513x513,
batch 16, BatchNorm decay 0.9997, 30K iterations on train_aug at output stride 16, random
scale 0.5-2.0 and left-right flip. The paper reaches 77.21% val mIoU at OS16 (Table 6) from
an ImageNet-pretrained ResNet-101 (a from-scratch run falls far short).
Its OS8 fine-tuning stage is configs/voc_os8.py.
The data (VOC 2012 + SBD's train_aug, 10,582 images) is prepared by our TFDS builder on
first use; without internet put VOCtrainval_11-May-2012.tar and benchmark.tgz in a folder and
add --config.data.manual_dir=FOLDER (README, "Datasets").
"""
import ml_collections
from ml_collections import config_dict

from deeplab_jax import models


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.data = data = ml_collections.ConfigDict()
    data.name = "voc"  # a key of deeplab_jax.data.datasets
    # "tfds": the prepared TFDS dataset (built on first use: downloaded, or read from
    # manual_dir); "folder": the extracted archives in `folder`, read with numpy and pillow
    # alone (no TensorFlow). Both give the same examples in the same order.
    data.source = "tfds"
    data.tfds_data_dir = config_dict.placeholder(str)  # None: TFDS's ~/tensorflow_datasets
    data.manual_dir = config_dict.placeholder(str)  # archives put there by hand (no internet)
    data.folder = config_dict.placeholder(str)  # for source="folder": the extracted dataset
    data.num_workers = 8  # host threads decoding and padding examples (order unaffected)
    data.image_scale = 1.0  # < 1: resize the whole dataset once on the host (cheap CPU runs)
    data.resize_to_fit = config_dict.placeholder(tuple)  # (short, long max): keep-ratio resize
    data.cache_mib = 0  # > 0: keep read examples in host memory up to this size (small datasets)
    data.train_split = "train_aug"  # 10,582 images: SBD train+val + VOC train - VOC val
    data.eval_split = "val"  # 1,449 images
    data.canvas_size = (513, 513)  # (h, w) every example is padded to (VOC images <= 500)
    data.crop_size = (513, 513)  # training crop (h, w); 32k+1 so corners align (Sec. 4.1)
    data.min_scale = 0.5  # random scale range (Sec. 4.1)
    data.max_scale = 2.0
    data.scale_step = 0.25  # scales drawn from {0.5, 0.75, ..., 2.0}, as the official code
    data.flip = True  # random left-right flip
    data.batch_size = 16  # global training batch (Sec. 4.1)
    data.ignore_label = 255  # VOC's object boundaries and padding

    config.model = model = ml_collections.ConfigDict()
    # The model, a key of deeplab_jax.models.MODELS: deeplabv3, deeplabv3_cascade (block5-7
    # in cascade, Sec. 3.2), deeplabv3plus, deeplabv2, pspnet, fcn, dilated_fcn, or per_pixel
    # (the 1x1-convolutions-only control). Its own settings are its block below
    # (config.model.<name>); the fields here are shared.
    model.architecture = "deeplabv3"
    model.depth = 101  # ResNet-v2 depth: 50, 101, 152 (14, 20, 26, 29: CPU-sized)
    model.width = 64  # root conv channels; 64 is the standard ResNet
    model.output_stride = 16  # 8, 16 or 32 (Sec. 3.1); up to 256 for deeplabv3_cascade
    model.multi_grid = (1, 2, 4)  # block4 unit rates relative to its base rate (Sec. 3.2)
    # How 3x3 atrous convolutions run (same parameters, same results): "xla" lets XLA lower
    # the dilated convolution; see deeplab_jax/models/atrous.py for the alternatives.
    model.atrous_impl = "xla"
    model.dtype = "float32"  # computation dtype: float32 or bfloat16 (params stay float32)
    model.bn_momentum = 0.9997  # BatchNorm decay (Sec. 4.1)
    model.bn_epsilon = 1e-5  # TF-slim resnet_arg_scope's epsilon
    # slim resnet_v2_<depth> .tar.gz/.ckpt or converted .npz (wants [-1,1] pixels: model scales)
    model.pretrained_backbone = config_dict.placeholder(str)  # None: backbone from scratch
    # Weight of the auxiliary FCN head on block3 (training only); None: the model's own
    # default (0.4 for PSPNet and the dilated FCN, as mmsegmentation; 0 for DeepLabv3).
    model.aux_loss_weight = config_dict.placeholder(float)
    # One block per model (each defined in deeplab_jax/models/<name>.py); only the block of
    # `architecture` is used, e.g. config.model.deeplabv3.atrous_rates (None: (6,12,18) at
    # output stride 16, scaled with it) and config.model.deeplabv3.aspp_channels (256).
    for name, block in models.default_blocks().items():
        model[name] = block

    config.optim = optim = ml_collections.ConfigDict()
    # "sgd": SGD with momentum, the paper's (Sec. 4.1); "adam": Adam (b1 = optim.momentum,
    # b2 = 0.999) on the same poly schedule, for short from-scratch runs (configs/synthetic.py).
    optim.optimizer = "sgd"
    optim.base_learning_rate = 0.007  # poly schedule start (Sec. 4.1)
    optim.poly_power = 0.9  # lr = base * (1 - step / num_train_steps) ** power
    optim.momentum = 0.9  # SGD momentum (Adam's b1)
    optim.weight_decay = 1e-4  # L2 on conv kernels only, as TF-slim's resnet_arg_scope
    optim.freeze_bn = False  # True: train with frozen BN statistics (OS8 fine-tuning stage)
    # Parameters held fixed (a stage of a staged schedule, training/freeze.py): glob patterns
    # over their names, e.g. ('backbone/*',): no gradient, no decay, no optimizer state, and
    # their BatchNorms run on their running statistics.
    optim.frozen = ()
    # Per-class loss weights: "none"; "median_frequency" (SegNet's balancing, computed from
    # the training labels); or "explicit" (optim.class_weights, one per class).
    optim.class_weighting = "none"
    optim.class_weights = config_dict.placeholder(tuple)

    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.output_stride = config_dict.placeholder(int)  # None: the training stride
    evaluation.scales = (1.0,)  # (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) for Table 6's MS
    evaluation.flip = False  # also average the flipped input's probabilities
    evaluation.batch_size = 8  # global evaluation batch
    evaluation.num_visualizations = 6  # val images drawn as image | truth | prediction
    # Resamples of the images behind each evaluation's 95% bootstrap interval
    # (`evaluation/intervals.py`); 0 leaves the intervals out.
    evaluation.interval_resamples = 1000
    # The fully connected CRF after the network (DeepLab v1/v2), in evaluation, prediction
    # and export: deeplab_jax/evaluation/crf.py. Defaults: DeepLab v2 ResNet-101's for VOC,
    # in pixels of the image it runs on (scale the two xy stds with the resolution).
    evaluation.crf = crf = ml_collections.ConfigDict()
    crf.enabled = False
    crf.iterations = 10  # mean-field updates
    crf.bilateral_weight = 4.0  # w1, the appearance kernel
    crf.bilateral_xy_std = 67.0  # theta_alpha, pixels
    crf.bilateral_rgb_std = 3.0  # theta_beta, colour levels
    crf.gaussian_weight = 3.0  # w2, the smoothness kernel
    crf.gaussian_xy_std = 1.0  # theta_gamma, pixels
    # The appearance sum over every pixel pair (1, exact) or over a grid of this stride, an
    # approximation that changed 1.5-15% of the labels on CamVid (experiments/crf_agreement).
    crf.downsample = 1
    crf.max_cached_kernel_mib = 1024  # exact: keep the N x N kernel when it fits (90x120 does)
    crf.normalization = "symmetric"  # as densecrf/pydensecrf; "none": the paper's Eq. 3 as written

    config.num_train_steps = 30_000  # Sec. 4.1
    config.log_every_steps = 100
    config.eval_every_steps = 5_000
    config.checkpoint_every_steps = 1_000
    config.max_checkpoints_to_keep = 3  # the latest ones, always including the latest
    # Also keep the checkpoints of the N best val mIoUs (evaluation steps); 0: latest only.
    config.keep_best_checkpoints = 0
    # A step with a non-finite loss or gradient is skipped (params, optimizer state and BN
    # statistics unchanged) and logged; this many in a row stop the run, naming the steps.
    config.max_consecutive_nonfinite_steps = 5
    config.seed = 0  # parameters, data order and augmentation all derive from it
    # A workdir whose latest checkpoint's params and BN statistics start this run (fresh step
    # and optimizer): a second training stage. Ignored once this run has checkpoints.
    config.init_from = config_dict.placeholder(str)
    # The parameters (and BN statistics) init_from's checkpoint may lack, left at their
    # initialisation: the new part of a staged model, e.g. ('context/*',). Glob patterns as
    # optim.frozen's; anything else missing, extra or mis-shaped is an error.
    config.init_from_fresh = ()
    return config
