"""Engine benchmarks for docs/benchmarks.md: overhead, vmap vs sequential, eager PyTorch baseline,
zoo-scale gradient fields and DDVs, all-pairs similarity.

Run on an accelerator from the repo root (writes JSON after every section, so a time-out keeps
what finished):
    PYTHONPATH=. XLA_PYTHON_CLIENT_PREALLOCATE=false python3 benchmarks/engine_bench.py --out bench.json
Sections can be chosen: --only overhead,strategies,torch,zoo_gradfield,zoo_ddv,all_pairs
`--smoke` runs the zoo-scale sections (zoo_gradfield, zoo_ddv, all_pairs) at a tiny size on any CPU:
the same code, for benchmarks/device_suite.sh --smoke and its test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxprov import engine, methods, models  # noqa: E402
from jaxprov.engine import EngineConfig, signatures, top_k_neighbours  # noqa: E402
from jaxprov.model import Model  # noqa: E402
from jaxprov.probes import Probes  # noqa: E402


def timed(fn, repeats=1):
    """(result, seconds per call) after one warm-up call (compile excluded)."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return out, (time.perf_counter() - start) / repeats


def make_zoo(arch: str, n: int, seed: int = 0, chunk: int = 256) -> list[Model]:
    """n independently initialised models, created on the device with one vmapped init per chunk."""
    template = models.init(arch, jax.random.PRNGKey(seed))
    spec = template.input_spec
    init = jax.jit(jax.vmap(lambda k: template.module.init(k, spec.example(1))))
    out = []
    for start in range(0, n, chunk):
        keys = jax.random.split(jax.random.PRNGKey(seed + start), min(chunk, n - start))
        stacked = init(keys)
        for i in range(keys.shape[0]):
            params = jax.tree_util.tree_map(lambda a: a[i], dict(stacked))
            out.append(template.replace(name=f"{arch}-{start + i}", params=params))
    return out


def seeds_for(model: Model, n: int, key=0) -> Probes:
    return Probes(model.input_spec.example(n, jax.random.PRNGKey(key)), {"source": "synthetic", "n": n})


def bench_overhead(results):
    """Engine gradient-field rows/s for one model vs the bare jitted input gradient, same batch."""
    rows = []
    for arch, anchors, steps in (("cifar_resnet20", 256, 50), ("resnet18", 16, 50)):
        model = models.init(arch, jax.random.PRNGKey(0))
        n = anchors * steps
        x = model.input_spec.example(n, jax.random.PRNGKey(1))
        grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.max(model.apply(p, x), axis=-1)), argnums=1))
        _, t_bare = timed(lambda: grad(model.params, x), 5)
        gf = methods.get("gradient_field", n_seeds=anchors, steps=steps)
        probes = gf.make_probes(seeds_for(model, anchors), jax.random.PRNGKey(2))
        cfg = EngineConfig(strategy="sequential", probe_chunk=anchors)
        _, t_engine = timed(lambda: signatures(gf, [model], probes, cfg).matrix, 3)
        rows.append({"arch": arch, "rows": n, "bare_input_grad_rows_per_s": n / t_bare,
                     "engine_gradient_field_rows_per_s": n / t_engine, "ratio": t_bare / t_engine})
        print(rows[-1], flush=True)
    results["overhead"] = rows


def bench_strategies(results):
    rows = []
    for arch, ks, anchors in (("cifar_resnet20", (1, 8, 32, 128), 64), ("resnet18", (1, 8, 32), 8)):
        zoo = make_zoo(arch, max(ks))
        for name, method in (("gradient_field", methods.get("gradient_field", n_seeds=anchors, steps=50)),
                             ("ddv", methods.get("ddv", iters=10))):
            probes = engine.probes_for(method, seeds_for(zoo[0], method.n_seeds), jax.random.PRNGKey(3), zoo[0])
            for k in ks:
                for strategy in ("vmap", "sequential"):
                    cfg = EngineConfig(strategy=strategy, model_chunk=min(k, 32) if strategy == "vmap" else None)
                    _, t = timed(lambda: signatures(method, zoo[:k], probes, cfg).matrix)
                    rows.append({"arch": arch, "method": name, "models": k, "strategy": strategy,
                                 "seconds": t, "models_per_s": k / t})
                    print(rows[-1], flush=True)
        results["strategies"] = rows


def bench_torch(results, n_jax=100):
    """The papers' way (eager PyTorch, one model at a time) vs jaxprov on CIFAR VGG16-BN models."""
    import torch

    from tests.torch_reference_cifar import CifarVGG

    device = "cuda" if torch.cuda.is_available() else "cpu"
    anchors, steps = 256, 50
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor((nodes + 1) / 2, dtype=torch.float32, device=device)
    w = torch.tensor(weights / 2, dtype=torch.float32, device=device)
    x = torch.randn(anchors, 3, 32, 32, device=device)

    def field_per_anchor(net):  # ModelGiF's code shape: one anchor's 50 path points per backward
        out = []
        for a in range(anchors):
            pts = (alphas[:, None, None, None] * x[a:a + 1]).requires_grad_(True)
            logits = net(pts)
            cls = logits[-1].argmax()
            (g,) = torch.autograd.grad(logits[:, cls].sum(), pts)
            out.append(torch.cumsum(g * w[:, None, None, None], 0) * x[a:a + 1])
        return torch.stack(out)

    def field_batched(net, batch=1024):  # well-batched eager: all 12,800 rows in batches of 1024
        pts = (alphas[None, :, None, None, None] * x[:, None]).reshape(-1, 3, 32, 32)
        grads = []
        for i in range(0, pts.shape[0], batch):
            p = pts[i:i + batch].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(net(p).max(dim=1).values.sum(), p)
            grads.append(g)
        return torch.cat(grads)

    row = {"device": device, "anchors": anchors, "steps": steps}
    nets = [CifarVGG(16).to(device).eval() for _ in range(3)]
    for label, fn in (("per_anchor", field_per_anchor), ("batched_1024", field_batched)):
        fn(nets[0])
        torch.cuda.synchronize() if device == "cuda" else None
        start = time.perf_counter()
        for net in nets:
            fn(net)
        torch.cuda.synchronize() if device == "cuda" else None
        row[f"torch_{label}_s_per_model"] = (time.perf_counter() - start) / len(nets)
        print(label, row[f"torch_{label}_s_per_model"], flush=True)
    zoo = make_zoo("cifar_vgg16_bn", n_jax)
    gf = methods.get("gradient_field", n_seeds=anchors, steps=steps)
    probes = gf.make_probes(seeds_for(zoo[0], anchors), jax.random.PRNGKey(4))
    for dtype in ("float32", "bfloat16"):
        _, t = timed(lambda: signatures(gf, zoo, probes, EngineConfig(dtype=dtype)).matrix)
        row[f"jaxprov_{dtype}_s_per_model"] = t / n_jax
        row[f"jaxprov_{dtype}_zoo_{n_jax}_s"] = t
        print(dtype, t, flush=True)
    results["torch_baseline"] = row


# The zoo sizes, and a tiny one that exercises the same code on a CPU in seconds: the same
# CIFAR ResNet family at 8 layers (one block per stage; compiling ResNet-20's gradient field and
# DDV twins on a CPU took most of the smoke run).
SIZES = {
    "full": {"arch": "cifar_resnet20", "gradfield_models": 1000, "gradfield": {}, "ddv_models": 2000, "ddv": {},
             "all_pairs": ((10_000, 100), (10_000, 4096), (100_000, 100))},
    "smoke": {"arch": "cifar_resnet20[depth=8]", "gradfield_models": 3, "gradfield": {"n_seeds": 4, "steps": 3},
              "ddv_models": 3, "ddv": {"n_seeds": 4, "iters": 2}, "all_pairs": ((300, 16), (1000, 8))},
}
SIZE = SIZES["full"]


def bench_zoo_gradfield(results):
    n = SIZE["gradfield_models"]
    zoo = make_zoo(SIZE["arch"], n)
    gf = methods.get("gradient_field", **SIZE["gradfield"])
    probes = gf.make_probes(seeds_for(zoo[0], gf.n_seeds), jax.random.PRNGKey(5))
    out = {}
    for dtype in ("float32", "bfloat16"):
        small = signatures(gf, zoo[:2], probes, EngineConfig(dtype=dtype))  # compile outside the timing
        del small
        start = time.perf_counter()
        sigs = signatures(gf, zoo, probes, EngineConfig(dtype=dtype))
        t = time.perf_counter() - start
        out[dtype] = {"arch": zoo[0].arch, "models": n, "seconds": t, "rows_per_s": n * gf.n_seeds * gf.steps / t,
                      "signature_floats": int(sigs.matrix.shape[1])}
        print(dtype, out[dtype], flush=True)
    results["zoo_gradient_field"] = out


def bench_zoo_ddv(results):
    n = SIZE["ddv_models"]
    zoo = make_zoo(SIZE["arch"], n)
    ddv = methods.get("ddv", **SIZE["ddv"])
    start = time.perf_counter()
    probes = ddv.make_probes(seeds_for(zoo[0], ddv.n_seeds), jax.random.PRNGKey(6), zoo[0])
    jax.block_until_ready(probes.inputs)
    t_probes = time.perf_counter() - start
    signatures(ddv, zoo[:2], probes)
    start = time.perf_counter()
    signatures(ddv, zoo, probes)
    t = time.perf_counter() - start
    results["zoo_ddv"] = {"arch": zoo[0].arch, "models": n, "twin_generation_s": t_probes, "signatures_s": t,
                          "extrapolated_10000_s": t * 10000 / n}
    print(results["zoo_ddv"], flush=True)


def bench_all_pairs(results):
    rows = []
    for n, d in SIZE["all_pairs"]:
        s = jax.random.normal(jax.random.PRNGKey(7), (n, d), jnp.float32)
        s = s / jnp.linalg.norm(s, axis=1, keepdims=True)
        if n <= 10_000:
            _, t = timed(lambda: s @ s.T, 3)
            rows.append({"n": n, "d": d, "op": "full matrix", "seconds": t})
        top_k_neighbours(s, 10)
        start = time.perf_counter()
        top_k_neighbours(s, 10)
        rows.append({"n": n, "d": d, "op": "top-10 neighbours, blocks of 8192", "seconds": time.perf_counter() - start})
        print(rows[-2:], flush=True)
    results["all_pairs"] = rows


SECTIONS = {"overhead": bench_overhead, "strategies": bench_strategies, "torch": bench_torch,
            "zoo_gradfield": bench_zoo_gradfield, "zoo_ddv": bench_zoo_ddv, "all_pairs": bench_all_pairs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="engine_bench.json")
    parser.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--smoke", action="store_true", help="the zoo-scale sections at a tiny size (CPU, seconds)")
    args = parser.parse_args()
    global SIZE
    SIZE = SIZES["smoke" if args.smoke else "full"]
    only = args.only or ("zoo_gradfield,zoo_ddv,all_pairs" if args.smoke else ",".join(SECTIONS))
    device = jax.devices()[0]
    results = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
               "command": " ".join(["python3", *sys.argv]), "size": "smoke" if args.smoke else "full"}
    for name in only.split(","):
        start = time.perf_counter()
        try:
            SECTIONS[name](results)
        except Exception as err:  # keep the other sections' figures
            results[f"{name}_error"] = f"{type(err).__name__}: {err}"
            print(f"{name} failed: {err}", flush=True)
        results.setdefault("section_seconds", {})[name] = time.perf_counter() - start
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
