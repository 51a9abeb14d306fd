"""The GPU benchmark's report: one line per job as it ends, the results table, the files.

`results.md` puts ours and torchvision's side by side per setting (ms/step, images/s, peak
memory, TFLOP/step and TFLOP/s, fraction of the bf16 peak, and the time ratio), with the
machine it ran on; `results.json` holds every number of every job.
"""
from __future__ import annotations

import os
from typing import Any

from deeplab_jax.reporting import machine
from experiments.gpu_speed import theirs
from experiments.results_files import write_results


def _fmt(value, spec: str, scale: float = 1.0, missing: str = "n/a") -> str:
    return missing if value is None else format(value * scale, spec)


def summary_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"[{result['framework']}] {result['setting']}: ERROR {result['error']}"
    if result.get("skipped"):
        return f"[{result['framework']}] {result['setting']}: skipped ({result['skipped']})"
    line = (f"[{result['framework']}] {result['setting']}: "
            f"{result['median_step_ms']:.2f} ms/step, {result['images_per_s']:.1f} img/s, "
            f"{_fmt(result.get('flops_per_step'), '.3g', 1e-12)} TFLOP/step, "
            f"{_fmt(result.get('tflops_per_s'), '.3g')} TFLOP/s "
            f"({_fmt(result.get('fraction_of_790'), '.1f', 100)}% of 790)"
            + (f", model-FLOPs MFU {100 * result['mfu_of_790']:.1f}%"
               if "mfu_of_790" in result else "") + ", peak "
            f"{_fmt(result.get('peak_bytes'), '.2f', 2**-30)} GiB"
            + (f" (XLA plan {result['xla_memory']['peak_memory_in_bytes'] / 2**30:.3g} GiB)"
               if (result.get("xla_memory") or {}).get("peak_memory_in_bytes") is not None
               else "") + f", loss {result['final_loss']:.3f}")
    if "with_input" in result:
        feed = result["with_input"]
        line += (f"\n    with input: {feed['fed_step_ms']:.2f} ms/step fed vs "
                 f"{feed['resident_step_ms']:.2f} resident (x{feed['fed_over_resident']:.2f}); "
                 f"host alone {feed['host_batch_ms']:.1f} ms/batch -> "
                 f"{'INPUT-BOUND' if feed['input_bound'] else 'not input-bound'}")
    return line


def markdown(report: dict[str, Any]) -> str:
    env = report["env"]
    lines = [f"# Training-step benchmark ({env['jax_backend']}: {env['jax_device']})", "",
             f"Machine: {machine.summary(env['machine'])}.", "",
             f"JAX {env['jax']}, flax {env['flax']}, optax {env['optax']}; {env['torch']}. "
             f"Batch {report['args']['batch']}, crop {report['args']['crop']}, "
             f"{report['args']['steps']} timed steps after {report['args']['warmup']} "
             "warm-up; median of block_until_ready'd steps.", ""]
    if env["jax_backend"] == "cpu":
        lines += ["**CPU backend: these timings are correctness checks, not speed figures.**",
                  ""]
    if report["args"].get("no_donate") or env.get("xla_flags"):
        lines += ["**Levers changed for this run:** "
                  + ("state not donated (--no_donate); " if report["args"].get("no_donate")
                     else "") + f"XLA_FLAGS={env.get('xla_flags') or '(unset)'}", ""]
    lines += ["| model | OS | dtype | atrous impl | ours ms | ours img/s | ours peak GiB | "
              "ours TFLOP/step (XLA) | ours TFLOP/s (XLA) | ours % of 790 (XLA) | "
              "ours MFU % (model FLOPs) | theirs ms | theirs img/s | theirs peak GiB | "
              "theirs TFLOP/step (torch) | theirs TFLOP/s | ours/theirs time |",
              "| --- " * 17 + "|"]
    torch_rows = {r["setting"]: r for r in report["torch"]}

    def cells(r):
        if not r or "error" in r or r.get("skipped"):
            note = (r.get("error") or r.get("skipped") or "not run") if r else "not run"
            return [note.replace("|", "/")[:80]] + [""] * 4
        peak = _fmt(r.get("peak_bytes"), ".2f", 2**-30)
        planned = (r.get("xla_memory") or {}).get("peak_memory_in_bytes")
        if r.get("peak_bytes") is None and planned is not None:
            peak += f" (XLA plan {planned / 2**30:.2g})"
        return [f"{r['median_step_ms']:.2f}", f"{r['images_per_s']:.1f}", peak,
                _fmt(r.get("flops_per_step"), ".3g", 1e-12),
                _fmt(r.get("tflops_per_s"), ".3g")]

    for ours in report["jax"]:
        key = "/".join(ours["setting"].split("/")[:3])
        their_row = torch_rows.get(key, {})
        model, stride, dtype, impl = ours["setting"].split("/")
        ours_cells = cells(ours)
        ok = "median_step_ms" in ours
        ours_cells += ([_fmt(ours.get("fraction_of_790"), ".1f", 100),
                        _fmt(ours.get("mfu_of_790"), ".1f", 100)] if ok else ["", ""])
        ratio = ""
        if ok and "median_step_ms" in their_row:
            ratio = f"{ours['median_step_ms'] / their_row['median_step_ms']:.2f}"
        lines.append("| " + " | ".join([f"R{model}", stride, dtype, impl] + ours_cells
                                       + cells(their_row) + [ratio]) + " |")
    feeds = [r for r in report["jax"] if "with_input" in r]
    if feeds:
        lines += ["", "## Fed through the host input path", "",
                  "| setting | resident ms/step | fed ms/step | fed/resident | host ms/batch "
                  "(no device) | input-bound? | data |", "| --- " * 7 + "|"]
        for r in feeds:
            f = r["with_input"]
            lines.append(f"| {r['setting']} | {f['resident_step_ms']:.2f} | "
                         f"{f['fed_step_ms']:.2f} | {f['fed_over_resident']:.2f} | "
                         f"{f['host_batch_ms']:.1f} | {'yes' if f['input_bound'] else 'no'} | "
                         f"{f['source']} |")
    lines += ["", "Notes:",
              "- ours: deeplab_jax DeepLabV3 (ResNet-v2, multi-grid (1,2,4), ASPP rates "
              "(6,12,18) at OS16, (12,24,36) at OS8), the package's train_step including the "
              "on-device scale/crop/flip warp, uint8 canvases resident on the device.",
              "- theirs: torchvision DeepLabV3" + "".join(sorted(
                  {f"; OS{r['output_stride']}: {r['construction']}" for r in report["torch"]
                   if "construction" in r})) + ". Torchvision's head has an extra 3x3 256->256 conv and dropout; its "
              "ResNet is v1.5 without multi-grid; fed pre-cropped float tensors.",
              "- FLOPs: XLA's cost analysis counts only the multiply-adds whose input lies "
              "inside the feature map (padding taps excluded, so large atrous rates count "
              "less), and what it counts depends on the atrous impl; torch's FlopCounterMode "
              "and our 'model FLOPs' (3 x the forward's conv and matmul FLOPs, from the "
              "jaxpr, impl-independent) count every tap. MFU uses model FLOPs.",
              "- ours/theirs time < 1 means ours is faster."]
    if report.get("torch_skipped"):
        lines += [f"- torchvision half skipped: {report['torch_skipped']}"]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    import flax  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    import optax  # pylint: disable=import-outside-toplevel

    ok, torch_line = theirs.torch_status()
    return dict(jax=jax.__version__, jax_backend=jax.default_backend(),
                jax_device=getattr(jax.devices()[0], "device_kind", str(jax.devices()[0])),
                jax_device_count=jax.device_count(), flax=flax.__version__,
                optax=optax.__version__, torch=torch_line if ok else f"no torch ({torch_line})",
                xla_flags=os.environ.get("XLA_FLAGS", ""), machine=machine.describe())


def write_report(report: dict[str, Any], output_dir: str) -> None:
    write_results(output_dir, report, markdown(report))
