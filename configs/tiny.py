"""A few-second smoke run and the tests' config: a minute model on small synthetic images.

    python -m deeplab_jax.main --config=configs/tiny.py --workdir=/tmp/deeplab_tiny
"""
from configs import synthetic


def get_config():
    config = synthetic.get_config()
    config.data.synthetic.update(num_train_examples=32, num_val_examples=10, image_size=33)
    config.data.canvas_size = config.data.crop_size = (33, 33)
    config.data.batch_size = 8
    config.model.width = 8
    # Every model at a test size (--config.model.architecture=NAME picks one).
    model = config.model
    model.deeplabv3.aspp_channels = 16
    model.deeplabv3_cascade.update(atrous_rates=(2, 4, 6), aspp_channels=16)  # with aspp=True
    model.deeplabv3plus.update(atrous_rates=(2, 4, 6), aspp_channels=16, low_level_channels=8,
                               decoder_channels=16)
    model.deeplabv2.atrous_rates = (1, 2, 3, 4)
    model.pspnet.update(bins=(1, 2, 3, 6), channels=16)
    model.dilated_fcn.channels = 16
    model.unet.channels = (4, 8, 16, 32, 64)
    model.unet_resnet.decoder_channels = (16, 8, 8)
    model.segnet.width_divisor = 16
    model.context_module.update(atrous_rates=(2, 4, 6), aspp_channels=16)
    model.per_pixel.width = 16
    model.deeplabv1.update(width_divisor=16, fc_channels=32, fc6_rate=2)
    model.dilation_frontend.update(width_divisor=16, fc_channels=32)
    model.gcn.kernel_size = 5
    model.refinenet.channels = (16, 8, 8, 8)
    # SGD, as configs/voc.py: the tests compare runs (8 devices against 1, a resume against
    # none), and SGD's update is linear in the gradient, where Adam's first step is
    # lr * sign(g): a last-digit difference in a near-zero gradient flips it.
    config.optim.optimizer = "sgd"
    config.optim.base_learning_rate = 0.2
    config.eval.batch_size = 8
    config.eval.num_visualizations = 2
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 1
    return config
