"""The reuse benchmark at a size that fits the device suite (benchmarks/device_suite.sh).

`--size device` is the `full` preset (CIFAR ResNet-20, VGG-16-BN and MobileNet on MNIST at 32x32x3,
every model of it) with its training epochs scaled by --epochs-scale; `--size smoke` is the `ci`
preset cut to one base, one independent and two nulls per group (trained as `ci` trains them, so
its 44 models are models of the `ci` zoo) with tiny probe sets, so the same code runs on a CPU in
a few minutes, and without training on a zoo folder that already holds the `ci` zoo (the test
suite's). Either runs through `jaxprov.bench.reuse.run` (resumable: a rerun reuses the zoo and
signatures under WORK) and writes OUT (a JSON file): the benchmark's document plus device,
versions, sizes, command and seconds.

    PYTHONPATH=. python3 benchmarks/device_reuse.py --size device --work /tmp/reuse --out docs/results/device/reuse.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxprov.bench import reuse  # noqa: E402

TINY_METHODS = {"ddv": {"n_seeds": 8, "iters": 3, "eps": 0.974, "step": 0.162},
                "gradient_field": {"n_seeds": 4, "steps": 3}, "sac": {"n_seeds": 20}, "ipguard": {"n_seeds": 8},
                "cka": {"n_seeds": 20}, "mistakes": {"n_seeds": 300, "min_probes": 3}}


def sized(preset: reuse.Preset, name: str, *, epochs_scale: float = 1.0, bases: int | None = None,
          independents: int | None = None, nulls: int | None = None, method_config=None,
          n_boot: int | None = None) -> reuse.Preset:
    """`preset` with the first `bases` / `independents` / `nulls` of each group and scaled epochs."""
    def first(groups, k):
        return {g: list(v)[:k] if k is not None else list(v) for g, v in groups.items()}

    stages = {s: {**v, "epochs": max(1, round(v["epochs"] * epochs_scale))} for s, v in preset.stages.items()}
    return dataclasses.replace(preset, name=name, bases=first(preset.bases, bases),
                               independents=first(preset.independents, independents),
                               nulls=first(preset.nulls, nulls), stages=stages,
                               method_config=method_config or preset.method_config,
                               n_boot=n_boot or preset.n_boot)


def preset_for(size: str, epochs_scale: float) -> reuse.Preset:
    if size == "device":
        return sized(reuse.PRESETS["full"], "full-device", epochs_scale=epochs_scale)
    return sized(reuse.PRESETS["ci"], "ci-smoke", bases=1, independents=1, nulls=2,
                 method_config=TINY_METHODS, n_boot=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("device", "smoke"), default="device")
    parser.add_argument("--epochs-scale", type=float, default=1 / 3,
                        help="the full preset's epochs times this (device size only; default 1/3)")
    parser.add_argument("--work", required=True, help="zoo, signatures and report folder (reused on a rerun)")
    parser.add_argument("--out", required=True, help="the JSON file for the figures")
    args = parser.parse_args()
    preset = preset_for(args.size, args.epochs_scale)
    reuse.PRESETS[preset.name] = preset  # run() takes presets by name
    command = " ".join(["python3", *sys.argv])
    start = time.perf_counter()
    doc = reuse.run(preset.name, args.work, command=command)
    device = jax.devices()[0]
    figures = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
               "command": command, "size": args.size, "preset": dataclasses.asdict(preset),
               "seconds": round(time.perf_counter() - start, 1), "reuse": doc}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=1, default=str))
    print(f"reuse figures: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
