"""No pickle on the checkpoint or data path: loading a file never runs code from it.

Checkpoints are orbax (tensorstore arrays + JSON metadata), datasets are image files, .mat
label files (scipy, no code) and TFDS array_record files, pretrained weights are TF
checkpoints or .npz loaded with allow_pickle=False. Config files are Python and executed:
they are trusted like code (README).
"""
import os
import re

import jax.numpy as jnp

from deeplab_jax.training import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_DIRS = ("deeplab_jax", "configs")
FORBIDDEN = {
    r"\bimport\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b": "a pickle-like module",
    r"\bfrom\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\s+import\b":
        "a pickle-like module",
    r"\bc?pickle\.(loads?|dumps?|Unpickler|Pickler)\b": "pickle",
    r"allow_pickle\s*=\s*True": "np.load(allow_pickle=True)",
    r"\btorch\.load\b": "torch.load (pickle)",
    r"\byaml\.(unsafe_)?load\(": "yaml.load (arbitrary objects)",
    r"flax\.training\.checkpoints|restore_checkpoint\(": "flax's legacy msgpack checkpoints",
    r"msgpack_numpy": "msgpack-numpy (pickle for object arrays)",
    r"\bPyTreeCheckpointer\(\)\.restore": "restore without a target",
}


def _python_files():
    for directory in CODE_DIRS:
        for folder, _, names in os.walk(os.path.join(ROOT, directory)):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def test_no_pickle_in_the_package_or_configs():
    found = []
    for path in _python_files():
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            code = line.split("#", 1)[0]
            for pattern, what in FORBIDDEN.items():
                if re.search(pattern, code):
                    found.append(f"{os.path.relpath(path, ROOT)}:{number}: {what}: "
                                 f"{line.strip()}")
    assert not found, "\n".join(found)


def test_every_np_load_refuses_pickles():
    calls = []
    for path in _python_files():
        source = open(path, encoding="utf-8").read()
        for match in re.finditer(r"\bnp\.load\(", source):
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(source)):  # the call's closing parenthesis
                depth += {"(": 1, ")": -1}.get(source[end], 0)
                if depth == 0:
                    break
            calls.append((os.path.relpath(path, ROOT), source[match.start():end + 1]))
    assert calls, "expected the .npz loader of pretrained.py"
    for path, call in calls:
        assert "allow_pickle=False" in call, f"{path}: {call}"


def test_a_checkpoint_holds_no_pickled_bytes(tmp_path):
    manager = checkpoint.create_manager(str(tmp_path))
    checkpoint.save(manager, 1, {"params": {"w": jnp.arange(6.0).reshape(2, 3)},
                                 "step": jnp.int32(1)})
    manager.close()
    files = [os.path.join(folder, name)
             for folder, _, names in os.walk(tmp_path / "checkpoints") for name in names]
    assert files
    for path in files:
        head = open(path, "rb").read(2)
        # Pickle protocols 2-5 start with 0x80 then the protocol number.
        assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), path
