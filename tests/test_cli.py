"""The command line and config checks: errors before anything compiles."""
import os
import subprocess
import sys

import pytest

from configs import synthetic, tiny, voc, voc_os8
from deeplab_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
    return subprocess.run([sys.executable, "-m", "deeplab_jax.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})


def test_mistyped_config_field_is_an_error(tmp_path):
    result = _main("--config=configs/tiny.py", f"--workdir={tmp_path}",
                   "--config.model.deph=50")
    assert result.returncode != 0
    assert "deph" in result.stderr
    assert not os.path.exists(tmp_path / "checkpoints")


def test_every_config_resolves():
    for module in (voc, voc_os8, synthetic, tiny):
        config = config_lib.resolve_config(module.get_config())
        assert len(config.model.deeplabv3.atrous_rates) == 3
    assert config_lib.resolve_config(voc.get_config()).model.deeplabv3.atrous_rates == (6, 12, 18)
    assert config_lib.resolve_config(voc_os8.get_config()).model.deeplabv3.atrous_rates == (12, 24, 36)


def test_eval_output_stride_rescales_the_rates():
    config = config_lib.resolve_config(voc.get_config())
    config.eval.output_stride = 8
    assert config_lib.eval_model_config(config).deeplabv3.atrous_rates == (12, 24, 36)


@pytest.mark.parametrize("field,value,message", [
    ("output_stride", 12, "output_stride=12"),
    ("depth", 34, "depth=34"),
    ("multi_grid", (1, 2), "multi_grid"),
])
def test_bad_model_fields_are_refused_with_their_value(field, value, message):
    config = voc.get_config()
    config.model[field] = value
    with pytest.raises(ValueError, match=message):
        config_lib.resolve_config(config)


def test_rates_that_do_not_carry_to_the_eval_stride_are_refused():
    config = tiny.get_config()
    config.model.deeplabv3.atrous_rates = (1, 2, 3)
    config.eval.output_stride = 16
    with pytest.raises(ValueError, match="eval output stride 16"):
        config_lib.resolve_config(config)


def test_dangerous_workdirs_are_refused():
    for workdir in ("/", "~"):
        with pytest.raises(ValueError, match="dedicated folder"):
            config_lib.check_workdir(workdir)


def test_relative_workdir_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_lib.check_workdir("run") == str(tmp_path / "run")
