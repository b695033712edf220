"""Throughput of jaxprov's Flax families: jitted forward and input gradient, images per second.

The bare per-model numbers the engine issue measures its overhead against. Usage:
    PYTHONPATH=. python benchmarks/forward_throughput.py [--archs resnet18,cifar_resnet20] [--batch 256]
        [--dtype float32|bfloat16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from jaxprov import models


def _time(fn, *args, repeats: int = 20) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def measure(arch: str, batch: int, dtype: str, repeats: int) -> dict:
    model = models.init(arch, jax.random.PRNGKey(0))
    cast = jnp.dtype(dtype)
    params = jax.tree_util.tree_map(lambda p: p.astype(cast), model.params)
    x = model.input_spec.example(batch, jax.random.PRNGKey(1)).astype(cast)
    forward = jax.jit(model.apply)
    top1 = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.max(model.apply(p, x), axis=-1)), argnums=1))
    t_fwd, t_grad = _time(forward, params, x, repeats=repeats), _time(top1, params, x, repeats=repeats)
    return {"arch": model.arch, "input": list(model.input_spec.shape), "batch": batch, "dtype": dtype,
            "forward_img_per_s": batch / t_fwd, "input_grad_img_per_s": batch / t_grad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet18,cifar_resnet20,cifar_vgg16_bn,cifar_mobilenet,lenet")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    device = jax.devices()[0]
    rows = [measure(a, args.batch, args.dtype, args.repeats) for a in args.archs.split(",")]
    for r in rows:
        print(f"{r['arch']:20s} {r['dtype']:9s} batch {r['batch']:4d}  forward {r['forward_img_per_s']:10.0f} img/s"
              f"  input-grad {r['input_grad_img_per_s']:10.0f} img/s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
                       "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
