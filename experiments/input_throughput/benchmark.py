"""Host input throughput: decoded, padded examples per second, per core and with threads.

    python experiments/input_throughput/benchmark.py --output_dir=experiments/input_throughput

What it times is exactly what a training step waits for on the host: `train_batches` (read
the files, decode JPEG and PNG, check the labels, pad onto the canvas, stack a batch) for
the global batch of 16, on `--workers` threads. Random scale, crop and flip are not in it:
they run on the device inside the step.

Datasets:
- `voc_like`: VOC-sized JPEGs (500x375 and 375x500, about VOC's 110 KB per file) with palette
  PNG labels, generated into a temporary folder in the VOCdevkit layout and read by
  `voc.VocFolder`. (The real VOC cannot be downloaded on the machine the figures come from.)
- `camvid`: the real CamVid train split (360x480 JPEG + PNG) from `--camvid_dir`, read by
  `camvid.CamVidFolder`, and, when TensorFlow Datasets is installed, the same split prepared
  by our TFDS builder (array_record) and read by index.

`--image_scale=0.25 --cache_mib=256` times the CPU protocol's CamVid instead (the whole split
resized to 90x120 on the host, `rescale.py`), without and with the examples kept in memory
(`memory_cache.py`; the cached rows are timed after one epoch has filled the cache).
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from typing import Sequence

import numpy as np
from absl import flags
from PIL import Image

from deeplab_jax.data import camvid, input_pipeline, voc
from deeplab_jax.data import palettes
from deeplab_jax.data.memory_cache import CachedSource
from deeplab_jax.data.rescale import RescaledSource
from deeplab_jax.reporting.command_line import parse_flags
from deeplab_jax.reporting.machine import cpu_description

GLOBAL_BATCH = 16
VOC_CANVAS = (513, 513)
CAMVID_CANVAS = (369, 481)


def make_voc_like_folder(root: str, num_examples: int, seed: int = 0) -> str:
    """Writes `num_examples` VOC-sized JPEG + palette PNG pairs in the VOCdevkit layout.

    The images are smooth random fields plus texture and noise, tuned to VOC's file size
    (JPEG decode time grows with the entropy coded, so the size is what must match).
    """
    rng = np.random.default_rng(seed)
    base = os.path.join(root, voc.VOC_DIR)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(base, folder), exist_ok=True)
    ids = [f"2007_{index:06d}" for index in range(num_examples)]
    for index, image_id in enumerate(ids):
        height, width = (375, 500) if index % 3 else (500, 375)
        coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC),
                            np.float32)
        texture = rng.normal(0, 18, (height, width, 3))
        image = np.clip(smooth + texture, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(base, "JPEGImages", f"{image_id}.jpg"),
                                    quality=90)
        label = np.zeros((height, width), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            bottom, right = top + rng.integers(40, height // 2), left + rng.integers(40, width // 2)
            label[top:bottom, left:right] = rng.integers(1, voc.NUM_CLASSES)
            label[top:bottom, left:left + 3] = voc.IGNORE_LABEL  # VOC's boundary band
        png = Image.fromarray(label, mode="P")
        png.putpalette(palettes.voc_palette().flatten().tolist())
        png.save(os.path.join(base, "SegmentationClass", f"{image_id}.png"))
    lists = os.path.join(base, "ImageSets", "Segmentation")
    for split, members in (("train", ids), ("val", ids[:1]), ("trainval", ids)):
        with open(os.path.join(lists, f"{split}.txt"), "w") as file:
            file.write("\n".join(members) + "\n")
    return root


def mean_file_kb(paths) -> float:
    return float(np.mean([os.path.getsize(path) for path in paths]) / 1024)


def time_batches(source, canvas_size, workers: int, num_batches: int) -> dict:
    """Examples per second of `train_batches` after one warm-up batch."""
    batches = input_pipeline.train_batches(
        source, global_batch_size=GLOBAL_BATCH, seed=0, start_step=0,
        canvas_size=canvas_size, num_workers=workers)
    next(batches)  # warm-up: thread pool, file cache, imports
    start = time.perf_counter()
    for _ in range(num_batches):
        next(batches)
    seconds = time.perf_counter() - start
    examples_per_second = num_batches * GLOBAL_BATCH / seconds
    return {"workers": workers, "batches": num_batches,
            "examples_per_second": round(examples_per_second, 1),
            "ms_per_batch_of_16": round(1000 * seconds / num_batches, 1)}


def _voc_and_camvid(args, scratch: str) -> list:
    """The full-resolution sources: generated VOC-sized files, CamVid's folder and TFDS."""
    voc_root = make_voc_like_folder(os.path.join(scratch, "voc"), args.voc_examples)
    voc_source = voc.VocFolder(voc_root, "train")
    voc_files = [os.path.join(voc_root, voc.VOC_DIR, "JPEGImages", f"{i}.jpg")
                 for i in voc_source.ids]
    sources = [("voc_like", "folder", voc_source, VOC_CANVAS,
                f"{args.voc_examples} generated 500x375 JPEGs, mean "
                f"{mean_file_kb(voc_files):.0f} KB")]
    if os.path.isdir(args.camvid_dir):
        camvid_source = camvid.CamVidFolder(args.camvid_dir, "train")
        sources.append(("camvid", "folder", camvid_source, CAMVID_CANVAS,
                        "real train split, 360x480 JPEG q95 + PNG"))
        try:
            from deeplab_jax.data import camvid_tfds, tfds_source
        except ImportError as error:
            print(f"TFDS path skipped: {error}")
        else:
            builder = camvid_tfds.prepare(data_dir=os.path.join(scratch, "tfds"),
                                          manual_dir=args.camvid_dir)
            sources.append(("camvid", "tfds", tfds_source.TfdsSource(
                builder, "train", class_names=camvid.CLASS_NAMES,
                palette=camvid_source.palette, ignore_label=camvid.IGNORE_LABEL),
                CAMVID_CANVAS, "the same split prepared by camvid_tfds (array_record)"))
    else:
        print(f"CamVid skipped: no folder at {args.camvid_dir}")
    return sources


def define_flags(fv: flags.FlagValues) -> None:
    d = dict(flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where results.json and results.md go.", **d)
    flags.DEFINE_string("camvid_dir", os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "shared", "data", "camvid"),
        "The CamVid folder.", **d)
    flags.DEFINE_integer("voc_examples", 96, "VOC-sized examples generated.", **d)
    flags.DEFINE_integer("batches", 10, "Batches timed per row.", **d)
    flags.DEFINE_list("workers", ["1", "2"], "Thread counts.", **d)
    flags.DEFINE_float("image_scale", 1.0, "< 1: CamVid only, resized by this factor.", **d)
    flags.DEFINE_integer("cache_mib", 0, "> 0, with --image_scale < 1: the scaled CamVid "
                         "also read through the cache.", **d)
    flags.mark_flag_as_required("output_dir", flag_values=fv)


def main(argv: Sequence[str]) -> None:
    args = parse_flags(define_flags, argv, "python experiments/input_throughput/benchmark.py")
    workers = [int(value) for value in args.workers]

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        sources = [] if args.image_scale != 1.0 else _voc_and_camvid(args, scratch)
        if args.image_scale != 1.0 and os.path.isdir(args.camvid_dir):
            scaled = RescaledSource(camvid.CamVidFolder(args.camvid_dir, "train"),
                                    args.image_scale)
            height, width = scaled[0]["label"].shape  # CamVid's 360x480, resized
            # The smallest 32k+1 canvas that holds it (the CPU protocol's 97x129 at 0.25).
            canvas = tuple(32 * math.ceil(side / 32) + 1 for side in (height, width))
            what = f"real train split resized to {height}x{width} on the host"
            sources.append(("camvid", f"folder x{args.image_scale:g}", scaled, canvas, what))
            if args.cache_mib:
                cached = CachedSource(scaled, args.cache_mib)
                for index in range(len(cached)):  # one epoch fills it
                    cached[index]
                sources.append(("camvid", f"folder x{args.image_scale:g}, cached", cached,
                                canvas, f"{what}, kept in memory "
                                f"({cached.cached_bytes / 2**20:.1f} MiB)"))

        for dataset, kind, source, canvas, what in sources:
            for count in workers:
                row = {"dataset": dataset, "source": kind, "canvas": list(canvas),
                       "what": what, **time_batches(source, canvas, count, args.batches)}
                rows.append(row)
                print(json.dumps(row))

    machine = cpu_description()  # the host path: no accelerator involved
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as file:
        json.dump({"command": " ".join(sys.argv), "machine": machine, "global_batch": GLOBAL_BATCH,
                   "results": rows}, file, indent=2)
    lines = ["| dataset | source | threads | examples/s | ms per batch of 16 | what |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['dataset']} | {r['source']} | {r['workers']} | {r['examples_per_second']} "
              f"| {r['ms_per_batch_of_16']} | {r['what']} |" for r in rows]
    with open(os.path.join(args.output_dir, "results.md"), "w") as file:
        file.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
