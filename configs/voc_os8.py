"""The paper's second stage: output stride 8, frozen BatchNorm, on VOC trainval (Sec. 4.1).

    python -m deeplab_jax.main --config=configs/voc_os8.py --workdir=/tmp/deeplab_voc_os8 \
        --config.init_from=/tmp/deeplab_voc

It starts from the OS16 stage's final parameters and BN statistics (the parameter tree does
not change with the output stride) with a fresh optimizer and step count. The paper reports
79.77% val mIoU at OS8 with multi-scale and flip inference (Table 6).
"""
from configs import voc


def get_config():
    config = voc.get_config()
    config.data.train_split = "trainval"
    config.model.output_stride = 8
    config.optim.freeze_bn = True
    config.optim.base_learning_rate = 0.001
    config.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    config.eval.flip = True
    return config
