"""Config errors stop a run before anything compiles, naming the field, the value and the fix."""
import logging
import os

import numpy as np
import pytest

from configs import tiny, voc
from deeplab_jax import config_lib, errors, train
from deeplab_jax.evaluation import crf
from deeplab_jax.inference.predictor import Predictor
from deeplab_jax.models import pretrained
from deeplab_jax.training import checkpoint, nonfinite
from deeplab_jax.training import step as train_step_lib


@pytest.fixture
def nothing_compiles(monkeypatch):
    """Fails the test if a run gets as far as building its train state."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run built its train state before refusing the config")
    monkeypatch.setattr(train_step_lib, "create_train_state", refuse)
    monkeypatch.setattr(train_step_lib, "jit_train_step", refuse)


def _refused(config, tmp_path, match):
    with pytest.raises(ValueError, match=match):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_unknown_field_is_named_with_the_closest_known_one(tmp_path, nothing_compiles):
    config = tiny.get_config()
    config.model.deph = 50  # a config file can add fields: a typo would be ignored silently
    _refused(config, tmp_path, r"config\.model\.deph \(did you mean config\.model\.depth\?\)")
    config = tiny.get_config()
    config.data.synthetic.num_train_exemples = 3
    _refused(config, tmp_path, r"num_train_exemples.*num_train_examples")


@pytest.mark.parametrize("section,stride", [("model", 4), ("model", 12), ("model", 64),
                                            ("eval", 24)])
def test_output_stride_outside_8_16_32(tmp_path, nothing_compiles, section, stride):
    config = tiny.get_config()
    config[section].output_stride = stride
    _refused(config, tmp_path, rf"config\.{section}\.output_stride={stride} is not one of "
                               r"\(8, 16, 32\)")


def test_global_batch_not_divisible_by_the_devices(tmp_path, nothing_compiles):
    config = tiny.get_config()
    config.data.batch_size = 12  # 8 simulated devices
    _refused(config, tmp_path, r"global batch size 12 \(config\.data\.batch_size\) is not "
                               r"divisible by the 8 devices.*multiple of 8")
    config = tiny.get_config()
    config.eval.batch_size = 4
    _refused(config, tmp_path, r"global batch size 4 \(config\.eval\.batch_size\) is not "
                               r"divisible by the 8 devices")


def test_atrous_rates_that_only_read_padding(tmp_path, nothing_compiles, caplog):
    config = tiny.get_config()  # 33x33 crops at output stride 8: a 5x5 feature map
    config.model.deeplabv3.atrous_rates = (5, 10, 15)
    _refused(config, tmp_path, r"ASPP rates \(5, 10, 15\) at output stride 8 on training "
                               r"crops \(33, 33\) \(feature map 5x5\)")
    # Some rates too large: a warning (they still work on larger evaluation images).
    config = tiny.get_config()
    config.model.deeplabv3.atrous_rates = (2, 4, 6)
    with caplog.at_level(logging.WARNING):
        config_lib.resolve_config(config)
    assert any("rate(s) (6,) >= the feature map side 5" in r.getMessage()
               for r in caplog.records)
    # The paper's setup fits: 513x513 crops at output stride 16, rates (6, 12, 18).
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        config_lib.resolve_config(voc.get_config())
    assert not [r for r in caplog.records if "ASPP" in r.getMessage()]


@pytest.mark.parametrize("field,value", [("num_train_steps", 0), ("max_checkpoints_to_keep", 0),
                                         ("max_consecutive_nonfinite_steps", 0),
                                         ("keep_best_checkpoints", -1)])
def test_counts_that_must_be_positive(tmp_path, nothing_compiles, field, value):
    config = tiny.get_config()
    config[field] = value
    _refused(config, tmp_path, rf"config\.{field}={value}")


@pytest.mark.parametrize("value", [-1, 10])
def test_too_few_bootstrap_resamples(tmp_path, nothing_compiles, value):
    config = tiny.get_config()
    config.eval.interval_resamples = value
    _refused(config, tmp_path, rf"config\.eval\.interval_resamples={value}: use 0")


def test_unknown_optimizer(tmp_path, nothing_compiles):
    config = tiny.get_config()
    config.optim.optimizer = "adamw"
    _refused(config, tmp_path, r"config\.optim\.optimizer='adamw' is not one of "
                               r"\('sgd', 'adam'\)")


def test_workdirs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_lib.check_workdir("runs/a") == str(tmp_path / "runs" / "a")  # normalised
    assert os.path.isdir(tmp_path / "runs" / "a")
    assert config_lib.check_workdir("runs/../runs/./b") == str(tmp_path / "runs" / "b")
    for wrong in ("/", "~", os.path.expanduser("~") + "/."):
        with pytest.raises(ValueError, match="dedicated folder"):
            config_lib.check_workdir(wrong)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="which is a file"):
        config_lib.check_workdir("a_file")
    with pytest.raises(ValueError, match="--workdir is required"):
        config_lib.check_workdir("")


def test_every_shipped_config_has_only_known_fields():
    import importlib
    import pathlib

    names = sorted(path.stem for path in pathlib.Path(voc.__file__).parent.glob("*.py")
                   if path.stem != "__init__")
    assert {"voc", "camvid", "cityscapes", "ade20k", "custom", "synthetic", "tiny"} <= set(names)
    for name in names:
        config_lib.check_known_fields(importlib.import_module(f"configs.{name}").get_config())


# -- User errors: a UserError (one line, no traceback on the command line) that says the fix --

def _user_error(function, *args, match, kind=None, **kwargs):
    """The UserError `function` raises; its message matches `match` and is `kind`."""
    with pytest.raises(kind or errors.UserError, match=match) as raised:
        function(*args, **kwargs)
    assert isinstance(raised.value, errors.UserError), type(raised.value)
    return raised.value


@pytest.mark.parametrize("field,value,fix", [
    ("depth", 34, r"--config\.model\.depth=101"),
    ("output_stride", 12, r"--config\.model\.output_stride=16"),
    ("multi_grid", (1, 2), r"set config\.model\.multi_grid to 3 factors, e\.g\. \(1, 2, 4\)"),
    ("architecture", "deeplabv4", r"set it to one of \["),
    ("aux_loss_weight", -1.0, r"set 0 \(no auxiliary loss\) or a positive weight"),
])
def test_model_field_errors_name_their_fix(field, value, fix):
    config = voc.get_config()
    config.model[field] = value
    error = _user_error(config_lib.resolve_config, config, match=fix, kind=errors.ConfigError)
    assert isinstance(error, ValueError) and f"config.model.{field}=" in str(error)


def test_config_errors_name_their_fix():
    config = tiny.get_config()
    config.optim.optimizer = "adamw"
    _user_error(config_lib.resolve_config, config, match=r"--config\.optim\.optimizer=sgd")
    config = tiny.get_config()  # rates of output stride 8 that do not halve at 16
    config.model.deeplabv3.atrous_rates = (1, 2, 3)
    config.eval.output_stride = 16
    _user_error(config_lib.resolve_config, config,
                match=r"multiples of 2 \(all >= 1\), or evaluate at output stride 8 or finer "
                      r"\(config\.eval\.output_stride\)")
    _user_error(config_lib.check_workdir, "", match=r"give one, e.g\. --workdir=",
                kind=errors.ConfigError)
    # The message is one line of `PROGRAM: error: ...` on the command line.
    try:
        config_lib.check_workdir("")
    except errors.UserError as error:
        line = errors.describe(error, "python -m deeplab_jax.main")
    assert line.startswith("python -m deeplab_jax.main: error: --workdir is required")
    assert "\n" not in line


def test_checkpoint_and_backbone_errors_name_their_fix(tmp_path):
    assert issubclass(checkpoint.CheckpointMismatchError, errors.CheckpointError)
    assert issubclass(checkpoint.CheckpointMismatchError, ValueError)
    _user_error(checkpoint.restore_variables, str(tmp_path), {}, match="train first, or point "
                r"--workdir \(or config\.init_from\) at the folder of a trained run",
                kind=FileNotFoundError)
    _user_error(pretrained.load_backbone, str(tmp_path / "r101.npz"), {"backbone": {}}, {},
                match=r"pretrained_backbone='.*r101\.npz': no such file or folder\. Give a "
                      "slim resnet_v2_N checkpoint", kind=errors.MissingFileError)
    np.savez(tmp_path / "plain.npz", x=np.zeros(1))
    _user_error(pretrained._read_npz, str(tmp_path / "plain.npz"),  # pylint: disable=W0212
                match=r"Convert the slim checkpoint with it \(python -m deeplab_jax\.pretrained "
                      r"convert SRC DST\.npz --depth=N\)", kind=errors.CheckpointError)
    skipped = nonfinite.SkippedSteps(1, lambda step: np.arange(2))
    _user_error(skipped._record, 3, True,  # pylint: disable=W0212
                match=r"max_consecutive_nonfinite_steps=1.*Lower the learning rate "
                      r"\(config\.optim\.base_learning_rate\)", kind=FloatingPointError)


def test_inference_errors_name_their_fix():
    _user_error(Predictor, None, {}, batch_size=0, match=r"batch_size=0 \(--batch_size of "
                r"deeplab_jax\.predict\) must be >= 1.*set 1 or more", kind=errors.ConfigError)
    _user_error(crf.CRFParams, normalization="l1", match=r"config\.eval\.crf\.normalization="
                r"'l1' is not one of \('symmetric', 'none'\); set one of them",
                kind=errors.ConfigError)
