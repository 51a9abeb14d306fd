"""How far the dense CRF's fast path is from the exact mean field, on real images.

    python -m experiments.crf_agreement.run --output_dir=experiments/crf_agreement/results \
        [--resolutions=90x120:10,180x240:3,360x480:1] [--downsamples=2,4] \
        [--model_workdir=/tmp/baselines/DeepLabv3_OS16/seed_0] [--voc_sized=1]

For CamVid val images (spread over the split) at each resolution, and for VOC-sized
synthetic scenes (375x500, `--voc_sized`), it runs `crf.mean_field` exactly
(`downsample=1`, every pixel pair) and with each `--downsamples` setting on the same
unaries and parameters (DeepLab v2's, the spatial standard deviations scaled with the
resolution: 67 and 1 px at 360x480), and, where pydensecrf is installed
(`pip install pydensecrf2==1.1`), with Krähenbühl's permutohedral lattice. It records per
setting the share of pixels whose label equals the exact one (mean and worst image), the mean
|Q - Q_exact| and the time per image. Unaries:
- `noisy`: the ground truth with noise, softmax(2 onehot + 1.5 N(0, 1)) (void pixels: noise
  only): many pixels near a tie, where the CRF decides;
- `model`: a trained model's probabilities (`--model_workdir`: a run of the baselines'
  DeepLabv3 OS16 row, `cpu_small`, 90x120), bilinearly upsampled to larger resolutions.
It writes results.json and results.md.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image

from deeplab_jax import errors
from deeplab_jax.evaluation import crf, evaluate
from deeplab_jax.evaluation.outputs import write_json
from deeplab_jax.models.resize import resize_bilinear
from deeplab_jax.reporting import machine
from deeplab_jax.reporting.command_line import parse_flags, setup_logging
from experiments.results_files import REPO_ROOT, commit

PROGRAM = "python -m experiments.crf_agreement.run"
FULL_SIZE = (360, 480)  # CamVid's; DeepLab v2's spatial stds are taken at this size
NUM_CLASSES = 11
VOID = 11


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where results.json/.md go.", **d)
    flags.DEFINE_string("camvid_dir", os.path.join(REPO_ROOT, "..", "shared", "data", "camvid"),
                        "The CamVid folder.", **d)
    flags.DEFINE_list("resolutions", ["90x120:10", "180x240:3", "360x480:1"],
                      "HxW:IMAGES, CamVid val images at each size.", **d)
    flags.DEFINE_list("downsamples", ["2", "4"], "Fast-path grid strides to measure.", **d)
    flags.DEFINE_list("unaries", ["noisy", "model"], "Unaries: noisy, model.", **d)
    flags.DEFINE_string("model_workdir", None, "A baselines DeepLabv3 OS16 cpu_small run "
                        "(for the `model` unaries).", **d)
    flags.DEFINE_integer("voc_sized", 0, "VOC-sized (375x500) synthetic scenes.", **d)
    flags.DEFINE_integer("max_cached_kernel_mib", crf.DEFAULTS.max_cached_kernel_mib,
                         "The exact path keeps its N x N kernel up to this size (faster).", **d)
    flags.mark_flags_as_required(["output_dir"], flag_values=fv)


def camvid_images(folder: str, size: tuple[int, int], count: int):
    """`count` val images spread over the split, resized to `size`: (name, image, labels)."""
    with open(os.path.join(folder, "val.txt")) as file:
        pairs = [line.split() for line in file if line.strip()]
    chosen = [pairs[index * len(pairs) // count] for index in range(count)]
    for image_path, label_path in chosen:
        image = Image.open(os.path.join(folder, image_path))
        labels = Image.open(os.path.join(folder, label_path))
        yield (os.path.basename(image_path),
               np.asarray(image.convert("RGB").resize(size[::-1], Image.BILINEAR), np.float32),
               np.asarray(labels.resize(size[::-1], Image.NEAREST)))


def voc_sized_scene(seed: int, size=(375, 500), classes=21):
    """Piecewise-constant coloured ellipses and rectangles with texture noise, VOC-sized."""
    rng = np.random.default_rng(seed)
    height, width = size
    labels = np.zeros(size, np.int64)
    palette = rng.uniform(0, 255, (classes, 3))
    rows, cols = np.mgrid[:height, :width]
    for _ in range(6):
        label = rng.integers(1, classes)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(30, 150), rng.uniform(30, 200)
        labels[((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1] = label
    image = palette[labels] + rng.normal(0, 6, (*size, 3))
    return f"synthetic_{seed}", np.clip(image, 0, 255).astype(np.float32), labels, classes


def noisy_unaries(labels: np.ndarray, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = 2.0 * np.eye(classes)[np.minimum(labels, classes - 1)]
    logits = logits + 1.5 * rng.normal(size=logits.shape)
    logits[labels == VOID] = rng.normal(size=(int((labels == VOID).sum()), classes))
    return np.asarray(jax.nn.softmax(jnp.asarray(logits), -1), np.float32)


class ModelUnaries:
    """The baselines' DeepLabv3 OS16 (cpu_small) probabilities at 90x120, upsampled."""

    def __init__(self, workdir: str):
        from deeplab_jax.inference.restore import restore_model
        from experiments.baselines import protocol
        row = next(row for row in protocol.ROWS if row.name == "DeepLabv3 OS16")
        self.restored = restore_model(protocol.row_config(row, "cpu_small"), workdir)
        self.size = (90, 120)

    def __call__(self, image_at_full: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        small = np.asarray(Image.fromarray(image_at_full.astype(np.uint8)).resize(
            self.size[::-1], Image.BILINEAR), np.float32)
        canvas = np.full((97, 129, 3), 127.5, np.float32)  # k * 16 + 1, the mean pixel
        canvas[:90, :120] = small
        probabilities = evaluate.predict_probabilities(
            self.restored.model, self.restored.variables, jnp.asarray(canvas)[None])[:, :90, :120]
        return np.asarray(resize_bilinear(probabilities, size))[0]


def pydensecrf_q(image, probabilities, params: crf.CRFParams) -> Optional[np.ndarray]:
    try:
        import pydensecrf.densecrf as dcrf  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    height, width, classes = probabilities.shape
    model = dcrf.DenseCRF2D(width, height, classes)
    model.setUnaryEnergy(np.ascontiguousarray(
        -np.log(np.clip(probabilities, crf.EPSILON, 1)).reshape(-1, classes).T))
    model.addPairwiseGaussian(sxy=params.gaussian_xy_std, compat=params.gaussian_weight)
    model.addPairwiseBilateral(sxy=params.bilateral_xy_std, srgb=params.bilateral_rgb_std,
                               rgbim=np.ascontiguousarray(image.astype(np.uint8)),
                               compat=params.bilateral_weight)
    q = np.array(model.inference(params.iterations))
    return q.reshape(classes, height, width).transpose(1, 2, 0)


def timed(function, *args) -> tuple[np.ndarray, float]:
    """One run of the jitted `function`, timed without its compilation.

    Compiled ahead of time rather than warmed up by a first call: at 360x480 one exact run
    takes most of an hour on 2 CPU cores, and a warm-up call would double that."""
    compiled = function.lower(*args).compile()
    start = time.perf_counter()
    out = np.asarray(jax.block_until_ready(compiled(*args)))
    return out, time.perf_counter() - start


def measure_image(image, probabilities, params: crf.CRFParams, downsamples: Sequence[int]
                  ) -> dict[str, Any]:
    """Every setting against the exact mean field on one image."""
    P, I = jnp.asarray(probabilities)[None], jnp.asarray(image)[None]
    runs = {}
    for downsample in (1, *downsamples):
        setting = dataclasses.replace(params, downsample=downsample)
        function = jax.jit(lambda p, i, s=setting: crf.mean_field(p, i, None, s))
        q, seconds = timed(function, P, I)
        runs[f"downsample={downsample}"] = (q[0], seconds)
    start = time.perf_counter()
    theirs = pydensecrf_q(image, probabilities, params)
    if theirs is not None:
        runs["pydensecrf"] = (theirs, time.perf_counter() - start)
    exact, exact_seconds = runs.pop("downsample=1")
    labels = exact.argmax(-1)
    out = {"exact_ms": 1e3 * exact_seconds,
           "unary_agreement": float((probabilities.argmax(-1) == labels).mean())}
    for name, (q, seconds) in runs.items():
        out[name] = {"agreement": float((q.argmax(-1) == labels).mean()),
                     "mean_abs_q": float(np.abs(q - exact).mean()), "ms": 1e3 * seconds}
    return out


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (resolution, unaries, setting): mean and worst agreement, mean |dQ|, ms."""
    groups: dict[tuple, list] = {}
    for record in records:
        for setting, value in record.items():
            if isinstance(value, dict):
                groups.setdefault((record["resolution"], record["unaries"], setting),
                                  []).append((record, value))
    lines = []
    for (resolution, unaries, setting), entries in groups.items():
        lines.append({"resolution": resolution, "unaries": unaries, "setting": setting,
                      "images": len(entries),
                      "agreement_mean": float(np.mean([v["agreement"] for _, v in entries])),
                      "agreement_worst": float(min(v["agreement"] for _, v in entries)),
                      "mean_abs_q": float(np.mean([v["mean_abs_q"] for _, v in entries])),
                      "ms": float(np.median([v["ms"] for _, v in entries])),
                      "exact_ms": float(np.median([r["exact_ms"] for r, _ in entries]))})
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = ["# The dense CRF's fast path against the exact mean field", "",
             f"Command: `{results['command']}`  ", f"Commit: `{results['commit']}`  ",
             f"Machine: {machine.summary(results['machine'])}", "",
             "Labels equal to the exact mean field's (share of pixels: the mean over the "
             "images, and the worst image), mean |Q - Q_exact|, and the median time per "
             "image (jitted, after compilation; pydensecrf: its C++ on one core).", "",
             "| resolution | unaries | setting | images | labels equal (mean) | worst image | "
             "mean \\|Q - Q_exact\\| | ms / image | exact ms / image |", "| --- " * 9 + "|"]
    for line in results["summary"]:
        lines.append(f"| {line['resolution']} | {line['unaries']} | {line['setting']} | "
                     f"{line['images']} | {100 * line['agreement_mean']:.2f}% | "
                     f"{100 * line['agreement_worst']:.2f}% | {line['mean_abs_q']:.4f} | "
                     f"{line['ms']:.0f} | {line['exact_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_flags(define_flags, argv, PROGRAM)
    setup_logging()
    downsamples = [int(value) for value in args.downsamples]
    if "model" in args.unaries and not args.model_workdir:
        raise errors.ConfigError("--unaries includes 'model': give --model_workdir (a run of "
                                 "the baselines' DeepLabv3 OS16 row), or --unaries=noisy.")
    model = ModelUnaries(args.model_workdir) if "model" in args.unaries else None
    results = {"command": f"{PROGRAM} {shlex.join(argv)}", "commit": commit(),
               "machine": machine.describe(), "records": [],
               "max_cached_kernel_mib": args.max_cached_kernel_mib}
    for spec in args.resolutions:
        size_text, count = spec.split(":")
        size = tuple(int(value) for value in size_text.split("x"))
        scale = size[0] / FULL_SIZE[0]
        params = crf.CRFParams(bilateral_xy_std=67.0 * scale, gaussian_xy_std=1.0 * scale,
                               max_cached_kernel_mib=args.max_cached_kernel_mib)
        for index, (name, image, labels) in enumerate(camvid_images(args.camvid_dir, size,
                                                                    int(count))):
            full = np.asarray(Image.fromarray(image.astype(np.uint8)).resize(
                FULL_SIZE[::-1], Image.BILINEAR), np.float32)
            for unaries in args.unaries:
                probabilities = (noisy_unaries(labels, NUM_CLASSES, index) if unaries == "noisy"
                                 else model(full, size))
                record = measure_image(image, probabilities, params, downsamples)
                results["records"].append({"image": name, "resolution": size_text,
                                           "unaries": unaries, **record})
                print(name, size_text, unaries, {k: v for k, v in record.items()}, flush=True)
                write(results, args.output_dir)
    for seed in range(args.voc_sized):  # DeepLab v2's own parameters: VOC's resolution
        name, image, labels, classes = voc_sized_scene(seed)
        params = dataclasses.replace(crf.DEFAULTS,
                                     max_cached_kernel_mib=args.max_cached_kernel_mib)
        record = measure_image(image, noisy_unaries(labels, classes, seed), params, downsamples)
        results["records"].append({"image": name, "resolution": "375x500 (synthetic)",
                                   "unaries": "noisy", **record})
        write(results, args.output_dir)
    return write(results, args.output_dir)


def write(results: dict[str, Any], output_dir: str) -> dict[str, Any]:
    results["summary"] = summarize(results["records"])
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "results.json"), results)
    with open(os.path.join(output_dir, "results.md"), "w") as file:
        file.write(markdown(results))
    return results


if __name__ == "__main__":
    errors.run_command(lambda: main(sys.argv[1:]), PROGRAM)
