"""Two evaluations of the same images, compared: B - A with its paired interval and p-value.

An evaluation is named by its per-image file (`eval/NAME_per_image.npz`), its metrics JSON
beside it, or a run's workdir (its latest evaluation, when that is one file). Two
evaluations are comparable only when they saw the same images in the same order: the same
count, the same split, the same label maps (`per_image.label_digest`; a dataset read at
another `image_scale` has other label maps) and, where both sources name their images, the
same names. Anything else is refused with what differs: pairing image i of one with image i
of the other would be silently wrong.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any

import numpy as np

from deeplab_jax.errors import MissingFileError, UserError
from deeplab_jax.evaluation import intervals, per_image


class NotComparable(UserError, ValueError):
    """The two evaluations did not see the same images (or classes)."""


_STEP = re.compile(r"_step(\d+)_")


def resolve(path: str) -> str:
    """The per-image file named by `path`: the file, its metrics JSON, or a run's workdir.

    Raises:
      MissingFileError (a FileNotFoundError): nothing there, or an evaluation without a
        per-image file.
      NotComparable: a workdir whose latest step has several evaluations (other strides,
        multi-scale, CRF): which one is meant must be named.
    """
    if os.path.isdir(path):
        folder = os.path.join(path, "eval")
        files = sorted(glob.glob(os.path.join(glob.escape(folder), "*" + per_image.FILE_SUFFIX)))
        if not files:
            raise MissingFileError(
                f"{path}: no evaluation with per-image results in {folder}. Evaluate the "
                "run's checkpoint (python -m deeplab_jax.main ... --mode=eval) to write one.")
        steps = {file: int(_STEP.search(os.path.basename(file)).group(1)) for file in files
                 if _STEP.search(os.path.basename(file))}
        latest = max(steps.values())
        candidates = [file for file, step in steps.items() if step == latest]
        if len(candidates) > 1:
            raise NotComparable(
                f"{path} has {len(candidates)} evaluations at its latest step {latest}: "
                + ", ".join(os.path.basename(c) for c in candidates)
                + ". Name the one to compare (its .json or _per_image.npz file).")
        return candidates[0]
    if path.endswith(".json"):
        path = path[:-len(".json")] + per_image.FILE_SUFFIX
        if not os.path.exists(path):
            raise MissingFileError(
                f"{path}: this evaluation has no per-image file (written since "
                "2026-12-02). Evaluate the checkpoint again (--mode=eval) to write it.")
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: no such evaluation, file or run folder. Give a run's "
                               "workdir, its eval/NAME.json or eval/NAME_per_image.npz.")
    return path


def check_same_images(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> None:
    """Raises NotComparable unless `a` and `b` (`per_image.load`) saw the same images."""
    first, second = names
    if a["class_names"] != b["class_names"]:
        raise NotComparable(f"{first} has classes {a['class_names']}, {second} has "
                            f"{b['class_names']}: not the same task.")
    split_a, split_b = a["record"].get("split"), b["record"].get("split")
    if split_a != split_b:
        raise NotComparable(f"{first} evaluated split {split_a!r}, {second} split "
                            f"{split_b!r}: compare evaluations of the same split.")
    count_a, count_b = len(a["confusion"]), len(b["confusion"])
    if count_a != count_b:
        raise NotComparable(f"{first} has {count_a} images, {second} has {count_b}: not the "
                            "same split (another dataset version or a subset).")
    ids_a, ids_b = list(a["image_id"]), list(b["image_id"])
    if all(ids_a) and all(ids_b) and ids_a != ids_b:
        order = " in another order" if sorted(ids_a) == sorted(ids_b) else ""
        first_diff = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
        raise NotComparable(f"{first} and {second} name different images{order}: image "
                            f"{first_diff} is {ids_a[first_diff]!r} in one and "
                            f"{ids_b[first_diff]!r} in the other.")
    digests_a, digests_b = list(a["label_digest"]), list(b["label_digest"])
    if digests_a != digests_b:
        if sorted(digests_a) == sorted(digests_b):
            raise NotComparable(f"{first} and {second} saw the same label maps in another "
                                "order: compare evaluations that read the split in the same "
                                "order.")
        differing = sum(x != y for x, y in zip(digests_a, digests_b))
        raise NotComparable(
            f"{first} and {second} differ in the label maps of {differing} of {count_a} "
            "images (another image_scale, resize or dataset version?): the same pixels must "
            "be scored for a paired comparison.")


def compare(path_a: str, path_b: str, *, num_resamples: int = intervals.NUM_RESAMPLES,
            seed: int = 0) -> dict[str, Any]:
    """B - A over the same images (`intervals.paired_difference`), with what was compared."""
    files = resolve(path_a), resolve(path_b)
    a, b = (per_image.load(file) for file in files)
    check_same_images(a, b, files)
    result = intervals.paired_difference(a["confusion"], b["confusion"],
                                         num_resamples=num_resamples, seed=seed)
    return {"a": files[0], "b": files[1], "split": a["record"].get("split"),
            "settings": {"a": a["record"], "b": b["record"]},
            "num_images": len(a["confusion"]), "class_names": a["class_names"], **result}


def _number(value: Any, sign: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.4f}" if sign else f"{value:.4f}")


def _p(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def report(result: dict[str, Any]) -> str:
    """The comparison as Markdown: the summary line, then every metric and class."""
    level = 100 * result["method"]["level"]
    miou = result["miou"]
    verdict = ("the interval excludes 0" if miou["low"] > 0 or miou["high"] < 0
               else "the interval includes 0: no difference shown at this size")
    lines = [f"A: `{result['a']}`  ", f"B: `{result['b']}`  ",
             f"{result['num_images']} images of split {result['split']!r}, paired; "
             f"{result['method']['resamples']} resamples (seed {result['method']['seed']}); "
             f"p-value: {result['method']['p_value']}.", "",
             f"**mIoU B - A = {miou['difference']:+.4f} ({level:g}% CI {miou['low']:+.4f} to "
             f"{miou['high']:+.4f}, p = {_p(miou['p_value'])})**: {verdict}.", "",
             f"| metric | A | B | B - A | {level:g}% CI | p |", "| --- " * 6 + "|"]
    rows = [("mIoU", result["miou"]), ("pixel accuracy", result["pixel_accuracy"])]
    per_class = result["per_class_iou"]
    rows += [(f"IoU {name}", {key: per_class[key][k] for key in per_class})
             for k, name in enumerate(result["class_names"])]
    for name, row in rows:
        interval = ("n/a" if row["low"] is None else
                    f"{row['low']:+.4f} to {row['high']:+.4f}")
        lines.append(f"| {name} | {_number(row['a'])} | {_number(row['b'])} | "
                     f"{_number(row['difference'], sign=True)} | {interval} | "
                     f"{_p(row['p_value'])} |")
    return "\n".join(lines) + "\n"
