"""Training a Model DNA detector with optax, resumably: stage 1 (g, contrastive) then stage 2 (h and
the P(derived) head, on labelled pairs), on the outputs of a zoo whose lineage is known.

The zoo's models are fixed: their outputs on the training probes are computed once (by the caller,
`jaxprov.bench.dna.training_set`) and only g, h and the head learn. Every step draws its probes,
anchors and pairs from a generator seeded by (config seed, stage, step), so a run resumed from its
checkpoint (`OUT/checkpoint.npz`, `jaxprov.checkpoint`, written every `checkpoint_every` steps) takes
exactly the steps an uninterrupted run would have taken. Another training's checkpoint there is
ignored with a logged line; a damaged one is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprov.checkpoint import load_tree, save_tree
from jaxprov.dna import views
from jaxprov.dna.classifier import logit, pair_similarity
from jaxprov.dna.contrastive import info_nce
from jaxprov.dna.detector import Architecture, Detector
from jaxprov.errors import JaxprovError
from jaxprov.model import InputSpec, as_inputs, n_items

CHECKPOINT = "checkpoint.npz"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Attributes:
      stage1_steps / stage2_steps: optax steps of each stage (stage 1 is skipped without g or with 0).
      probes_per_step: probes drawn per step (every DNA of a step is on the same probes).
      anchors_per_step / negatives: stage 1 batch: anchors, each with one derived model and this many
        independent ones.
      pairs_per_step: stage 2 batch, half derived and half independent pairs.
      temperature: InfoNCE temperature (`jaxprov.dna.contrastive`).
      lr: Adam learning rate of both stages.
      seed: the PRNG seed of the init and of every step's draws.
      checkpoint_every: steps between checkpoints (resume).
    """

    stage1_steps: int = 600
    stage2_steps: int = 600
    probes_per_step: int = 64
    anchors_per_step: int = 16
    negatives: int = 8
    pairs_per_step: int = 64
    temperature: float = 0.1
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 200


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The zoo as the detector sees it: probes, every model's outputs on them, and its lineage.

    Attributes:
      x: [n, ...] probe inputs in the models' input space (text: a dict of [n, L] token arrays).
      logits: per model, its outputs on x [n, C_m] (C_m may differ: transfer to a new label space).
      names: the models, aligned with `logits`.
      ancestors: model -> the models it descends from.
      references: the models a pair's reference may be (bases and independents); every other
        model is a suspect only.
      input_spec, domains, architectures, probes: recorded in the detector (`probes`: source, digest).
    """

    x: np.ndarray
    logits: Sequence[np.ndarray]
    names: Sequence[str]
    ancestors: Mapping[str, frozenset]
    references: Sequence[str]
    input_spec: InputSpec
    domains: Sequence[str] = ()
    architectures: Sequence[str] = ()
    probes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def pairs(self) -> np.ndarray:
        """[(reference, suspect, label)] index triples: label 1 when the reference is an ancestor."""
        index = {n: i for i, n in enumerate(self.names)}
        return np.asarray([(index[r], index[s], int(r in self.ancestors.get(s, ())))
                           for r in self.references for s in self.names if s != r], np.int64).reshape(-1, 3)

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps([list(self.names), sorted((k, sorted(v)) for k, v in self.ancestors.items()),
                                       list(self.references)]).encode())
        for leaf in jax.tree_util.tree_leaves(self.x):  # an array, or a text model's dict of token ids
            leaf = np.asarray(leaf)
            h.update(np.ascontiguousarray(leaf, leaf.dtype if leaf.dtype.kind in "iu" else np.float32).tobytes())
        for a in self.logits:
            h.update(np.ascontiguousarray(a, np.float32).tobytes())
        return h.hexdigest()


def _views(data: TrainingSet, arch: Architecture) -> np.ndarray:
    return np.stack([np.asarray(views.output_view(jnp.asarray(a), arch.view, arch.n_classes, arch.k))
                     for a in data.logits])  # [M, n, W]


def _stage1_batches(pairs: np.ndarray, n_models: int):
    """Per anchor (a reference with derived models): its derived models and its unrelated ones."""
    anchors = []
    for r in np.unique(pairs[:, 0]):
        mine = pairs[pairs[:, 0] == r]
        pos, neg = mine[mine[:, 2] == 1, 1], mine[mine[:, 2] == 0, 1]
        if pos.size and neg.size:
            anchors.append((int(r), pos, neg))
    return anchors


def train(data: TrainingSet, arch: Architecture = Architecture(), config: TrainConfig = TrainConfig(),
          out: str | Path | None = None, log: Callable[[str], None] = print, name: str = "dna",
          recipe_digest: str | None = None) -> Detector:
    """Train a detector on `data`; with `out`, checkpoint to OUT/checkpoint.npz and resume from it.

    Returns the trained Detector (the caller saves it)."""
    pairs = data.pairs()
    if not pairs.size or pairs[:, 2].min() == 1 or pairs[:, 2].max() == 0:
        raise JaxprovError("dna train: the zoo needs both derived and independent pairs (a base with "
                           "children and a model unrelated to it)")
    n = n_items(data.x)
    if n < config.probes_per_step:
        raise JaxprovError(f"dna train: {n} probes, fewer than probes_per_step={config.probes_per_step}")
    v = jnp.asarray(_views(data, arch))
    x = as_inputs(data.x, jnp)
    take_x = lambda idx: jax.tree_util.tree_map(lambda a: a[idx], x)  # noqa: E731
    params = arch.init(jax.random.PRNGKey(config.seed), data.input_spec)
    g_mod, h_mod = arch.encoder_module(), arch.embedding_module()
    stamp = hashlib.sha256(json.dumps([dataclasses.asdict(arch), dataclasses.asdict(config), data.digest()])
                           .encode()).hexdigest()
    opt = optax.adam(config.lr)
    state = {"stage": 1, "step": 0, "params": params, "opt": opt.init(params["g"])}
    ckpt = None if out is None else Path(out) / CHECKPOINT
    if ckpt is not None:
        state = _resume(ckpt, stamp, state, opt, log)

    def encode(g_params, xs):
        return jnp.zeros((n_items(xs), arch.width), jnp.float32) if g_mod is None else g_mod.apply(g_params, xs)

    # Stage 1: g contrastively (the models are fixed).
    anchors = _stage1_batches(pairs, v.shape[0])
    steps1 = 0 if g_mod is None else config.stage1_steps

    @jax.jit
    def step1(g_params, opt_state, probe_idx, anchor_idx, pos_idx, neg_idx):
        def loss_fn(gp):
            gx = encode(gp, take_x(probe_idx))[None]  # [1, P, W]
            take = lambda idx: v[idx][..., probe_idx, :]  # noqa: E731
            return info_nce(take(anchor_idx) + gx, take(pos_idx) + gx, take(neg_idx) + gx[None],
                            config.temperature)
        loss, grads = jax.value_and_grad(loss_fn)(g_params)
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int and float
            updates, opt_state = opt.update(grads, opt_state, g_params)
        return optax.apply_updates(g_params, updates), opt_state, loss

    clock = _Progress("stage 1 (g, contrastive)", steps1, log)
    while state["stage"] == 1 and state["step"] < steps1:
        rng = np.random.default_rng([config.seed, 1, state["step"]])
        probe_idx = rng.choice(n, config.probes_per_step, replace=False)
        chosen = [anchors[i] for i in rng.integers(len(anchors), size=config.anchors_per_step)]
        a_idx = np.asarray([a for a, _, _ in chosen])
        p_idx = np.asarray([rng.choice(pos) for _, pos, _ in chosen])
        n_idx = np.stack([rng.choice(neg, config.negatives, replace=neg.size < config.negatives)
                          for _, _, neg in chosen])
        g_params, state["opt"], loss = step1(state["params"]["g"], state["opt"], probe_idx, a_idx, p_idx, n_idx)
        state["params"] = {**state["params"], "g": g_params}
        state["step"] += 1
        clock.tick(state["step"], float(loss))
        _maybe_checkpoint(ckpt, stamp, state, config)
    if state["stage"] == 1:
        state = {**state, "stage": 2, "step": 0, "opt": opt.init({"h": params["h"], "head": params["head"]})}
        _maybe_checkpoint(ckpt, stamp, state, config, force=True)

    # Stage 2: h and the head on labelled pairs, g frozen.
    gx_all = jax.lax.stop_gradient(encode(state["params"]["g"], x))
    positives, negatives = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    half = config.pairs_per_step // 2

    def embed(hp, dna):
        return dna / jnp.maximum(jnp.linalg.norm(dna, axis=-1, keepdims=True), 1e-12) if h_mod is None \
            else h_mod.apply(hp, dna)

    @jax.jit
    def step2(trainable, opt_state, probe_idx, ref_idx, sus_idx, labels):
        def loss_fn(tp):
            gx = gx_all[probe_idx][None]
            ea = embed(tp["h"], v[ref_idx][:, probe_idx] + gx)
            eb = embed(tp["h"], v[sus_idx][:, probe_idx] + gx)
            z = logit(tp["head"], pair_similarity(ea, eb))
            return jnp.mean(optax.sigmoid_binary_cross_entropy(z, labels))
        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = opt.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    clock = _Progress("stage 2 (classifier)", config.stage2_steps, log)
    while state["step"] < config.stage2_steps:
        rng = np.random.default_rng([config.seed, 2, state["step"]])
        probe_idx = rng.choice(n, config.probes_per_step, replace=False)
        batch = np.concatenate([positives[rng.integers(len(positives), size=half)],
                                negatives[rng.integers(len(negatives), size=half)]])
        trainable = {"h": state["params"]["h"], "head": state["params"]["head"]}
        trainable, state["opt"], loss = step2(trainable, state["opt"], probe_idx, batch[:, 0], batch[:, 1],
                                              jnp.asarray(batch[:, 2], jnp.float32))
        state["params"] = {**state["params"], **trainable}
        state["step"] += 1
        clock.tick(state["step"], float(loss))
        _maybe_checkpoint(ckpt, stamp, state, config)
    meta = {"name": name, "recipe_digest": recipe_digest, "training_set_digest": data.digest(),
            "domains": list(data.domains), "architectures": sorted(set(data.architectures)),
            "probes": dict(data.probes), "train_config": dataclasses.asdict(config),
            "n_models": len(data.names), "n_pairs": int(len(pairs)), "n_derived_pairs": int(len(positives)),
            "versions": {"optax": optax.__version__}}
    return Detector(arch, jax.tree_util.tree_map(jnp.asarray, state["params"]), data.input_spec, meta)


class _Progress:
    """One line every ~10 % of a stage: step, loss, and the time left at the pace so far."""

    def __init__(self, what: str, total: int, log: Callable[[str], None]):
        self.what, self.total, self.log = what, total, log
        self.t0, self.first = time.perf_counter(), None
        self.every = max(1, total // 10)

    def tick(self, step: int, loss: float):
        if self.first is None:
            self.first, self.t0 = step, time.perf_counter()  # the first step compiles: not the pace
            return
        if step % self.every == 0 or step == self.total:
            pace = (time.perf_counter() - self.t0) / max(1, step - self.first)
            self.log(f"  {self.what}: step {step}/{self.total}, loss {loss:.4f}, "
                     f"ETA {pace * (self.total - step):.0f} s")


def _maybe_checkpoint(path: Path | None, stamp: str, state: dict, config: TrainConfig, force: bool = False):
    if path is None or not (force or state["step"] % config.checkpoint_every == 0):
        return
    save_tree(path, {"params": state["params"], "opt": state["opt"]}, stamp,
              {"stage": state["stage"], "step": state["step"]})


def _resume(path: Path, stamp: str, fresh: dict, opt, log) -> dict:
    """The checkpointed state when it was written by this same training (same data, architecture and
    config); the fresh state when there is none or it is another training's (with a line); one
    CheckpointError line for a damaged one (`jaxprov.checkpoint`)."""
    def template(meta: dict):
        stage, step = meta.get("stage"), meta.get("step")
        if stage not in (1, 2) or type(stage) is not int or type(step) is not int or step < 0:
            return None
        opt_state = fresh["opt"] if stage == 1 else opt.init({k: fresh["params"][k] for k in ("h", "head")})
        return {"params": fresh["params"], "opt": opt_state}

    restored = load_tree(path, template, stamp, what="DNA training", log=lambda line: log(f"  {line}"))
    if restored is None:
        return fresh
    tree, meta = restored
    log(f"  resuming from {path}: stage {meta['stage']}, step {meta['step']}")
    return {"stage": meta["stage"], "step": meta["step"], **tree}
