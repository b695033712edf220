"""Train models and derive children from them: the ground truth that provenance methods are tested on.

Every function is deterministic given its PRNG key (same key -> bitwise identical params on one
backend) and returns a new `Model` whose `meta["lineage"]` says how it was made:
`{"parent": parent.name or None, "derivation": "train" | "finetune" | "transfer" | "prune" |
"distill" | "quantize_int8" | "cast_fp16" | "average" | "recalibrate", ...the derivation's settings}`. Inputs `x`
are already in the model's input space (`model.input_spec.normalize(raw)`); labels `y` are integer
class ids.

Every derivation that trains runs the one loop of `jaxprov.training.loop` (Adam over
`params["params"]`, BatchNorm in train mode while fitting, in eval mode everywhere else).

Distillation follows Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015):
the student minimises T^2 * CE(softmax(z_teacher / T), softmax(z_student / T)). With T = 1 it is
model extraction from an API returning probabilities; with `hard_labels` it fits argmax z_teacher
instead, i.e. extraction from a label-only API (Tramer et al. 2016). Adversarial extraction also
trains the student adversarially, on L-inf PGD perturbations of the queries (Madry et al., "Towards
Deep Learning Models Resistant to Adversarial Attacks", 2018; `jaxprov.attacks`), with the victim's
clean-query targets.

Multi-exit models (`jaxprov.models.multi_exit`) train with Shallow-Deep Networks' recipe
(`train_exits`: every exit at once with SDN's weight schedule, or the internal classifiers alone on
a frozen backbone); every other derivation of one trains all its exits too (`jaxprov.training.loop`).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov import models
from jaxprov.models import layers
from jaxprov.models.layers import InternalClassifier
from jaxprov.models.multi_exit import num_exits
from jaxprov.errors import JaxprovError
from jaxprov.model import Model, as_inputs, n_items
from jaxprov.probes import key_repr
from jaxprov.training.loop import accuracy, fit, key_path, predict, sdn_weights, tree_mask


def train(arch_or_model: str | Model, x, y, key: jax.Array, epochs: int, lr: float = 1e-3,
          batch: int = 128, name: str | None = None) -> Model:
    """Supervised training with cross-entropy and Adam.

    Args:
      arch_or_model: an arch key ("lenet", "mlp[hidden=64:32]") for a fresh model initialised from
        `key`, or a Model to continue training from its current params.
      x: inputs [n, ...] in the model's input space.
      y: integer labels [n].
      key: PRNG key for initialisation and shuffling.
      epochs: passes over the data (each drops the last partial batch, so every step has one shape).
      lr: Adam learning rate.
      batch: examples per step.
      name: the new model's name (default: the arch key).

    Returns:
      The trained Model; meta records the training settings and accuracy.
    """
    init_key, key = jax.random.split(key)
    if isinstance(arch_or_model, str):
        model, parent = models.init(arch_or_model, init_key), None
    else:
        model, parent = arch_or_model, arch_or_model.name
    params = fit(model, x, jnp.asarray(y, jnp.int32), key, epochs, lr, batch, "labels")
    settings = {"epochs": epochs, "lr": lr, "batch": batch, "n_train": int(len(y)), "key": key_repr(key)}
    return _derived(model, params, name or model.arch, parent, "train", settings, x, y)


def train_exits(arch_or_model: str | Model, x, y, key: jax.Array, epochs: int, lr: float = 1e-3,
                heads_only: bool = False, batch: int = 128, name: str | None = None) -> Model:
    """Shallow-Deep Networks' training of a multi-exit model (Kaya et al., ICML 2019).

    Args:
      arch_or_model: a multi-exit arch key (fresh model from `key`) or a multi-exit Model.
      x, y, key, epochs, lr, batch, name: as in `train`.
      heads_only: train only the internal classifiers on the frozen rest (SDN's "IC-only" mode:
        each IC's cross-entropy with weight 1; the backbone's BatchNorm stays in eval mode);
        otherwise every exit trains with loss sum_i tau_i CE_i + CE_final and SDN's schedule
        tau_i = min(C_i, 0.01 + epoch C_i / epochs) (`loop.sdn_weights`).

    Departure: Adam (the training loop's optimiser) instead of SDN's SGD 0.1 with momentum 0.9.
    """
    init_key, key = jax.random.split(key)
    if isinstance(arch_or_model, str):
        model, parent = models.init(arch_or_model, init_key), None
    else:
        model, parent = arch_or_model, arch_or_model.name
    k = num_exits(model.module)
    if k < 2:
        raise JaxprovError(f"{model.arch} has no early exits; train_exits needs a multi-exit architecture "
                           "(e.g. lenet_exits)")
    if heads_only:
        heads = internal_classifier_paths(model)
        mask = tree_mask(model.params, lambda path, leaf: any(path[1:1 + len(h)] == h for h in heads))
        weights = lambda epoch: np.append(np.ones(k - 1, np.float32), np.float32(0.0))  # noqa: E731
        params = fit(model, x, jnp.asarray(y, jnp.int32), key, epochs, lr, batch, "labels", mask,
                     train_stats=False, exit_weights=weights)
    else:
        params = fit(model, x, jnp.asarray(y, jnp.int32), key, epochs, lr, batch, "labels",
                     exit_weights=lambda epoch: sdn_weights(k, epoch, epochs))
    settings = {"epochs": epochs, "lr": lr, "batch": batch, "n_train": int(len(y)), "key": key_repr(key),
                "recipe": "sdn-heads-only" if heads_only else "sdn"}
    return _derived(model, params, name or model.arch, parent, "train", settings, x, y)


def recalibrate(model: Model, x, batch: int = 512, name: str | None = None) -> Model:
    """`model` with every BatchNorm's running statistics re-estimated on inputs `x`; no weight moves and
    no label is read (AdaBN: Li et al., "Revisiting Batch Normalization for Practical Domain
    Adaptation", 2016). What a user of a model on a new domain does first, with a handful of unlabelled
    inputs, and an attack on a protection that lives in the statistics the model stored
    (`jaxprov.protect.attacks`).

    One train-mode pass per chunk of `batch` inputs (in order; a last partial chunk is dropped when
    there is a full one): every BatchNorm normalises by the chunk's statistics, as in training, and
    its running mean and (unbiased) variance become the average of the chunks' (torch's cumulative
    average, `momentum=None`). With one chunk, eval mode then computes exactly what train mode does on
    it. Read from the update train mode makes: started from zero, the update is momentum x the batch's
    statistics (`layers.BatchNorm`, the only BatchNorm of jaxprov's models)."""
    if not jax.tree_util.tree_leaves(model.params.get("batch_stats", {})):
        raise JaxprovError(f"{model.name} ({model.arch}) has no BatchNorm running statistics to recalibrate")
    if not isinstance(batch, int) or batch < 1:
        raise JaxprovError(f"recalibrate needs a positive integer batch, got {batch!r}")
    x = as_inputs(x, jnp)
    n = n_items(x)
    if n == 0:
        raise JaxprovError("recalibrate needs at least one input")
    weights = model.params["params"]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, model.params["batch_stats"])

    @jax.jit
    def stats(xb):  # each leaf: momentum x the chunk's statistics
        _, updates = model.module.apply({"params": weights, "batch_stats": zeros}, xb, mutable=["batch_stats"])
        return updates["batch_stats"]

    b = min(batch, n)
    chunks = range(0, n - b + 1, b)
    total = jax.tree_util.tree_map(jnp.zeros_like, zeros)
    for i in chunks:
        total = jax.tree_util.tree_map(jnp.add, total, stats(jax.tree_util.tree_map(lambda a: a[i:i + b], x)))
    running = jax.tree_util.tree_map(lambda t: t / (len(chunks) * layers.BatchNorm.momentum), total)
    settings = {"batch": b, "n_inputs": n}
    return _derived(model, {**model.params, "batch_stats": running}, name or f"{model.name}-recalibrated",
                    model.name, "recalibrate", settings)


def internal_classifier_paths(model: Model) -> list[tuple[str, ...]]:
    """The module paths of a model's internal classifiers (`layers.InternalClassifier`), found by
    running one example, so no family has to name them."""
    _, state = model.module.apply(model.params, model.input_spec.example(1), mutable=["intermediates"],
                                  capture_intermediates=lambda mdl, _: isinstance(mdl, InternalClassifier))
    paths = [key_path(p)[:-2] for p, _ in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]]
    return sorted(set(paths))


def finetune(model: Model, x, y, key: jax.Array, epochs: int, lr: float = 1e-3,
             last_layer_only: bool = False, num_classes: int | None = None, batch: int = 128,
             name: str | None = None, adversarial: dict | None = None) -> Model:
    """Continue training `model` on (x, y), optionally only its head or with a new head ("transfer").

    Args:
      model: the parent.
      x, y: fine-tuning data (inputs in the model's space, integer labels).
      key: PRNG key for shuffling (and the fresh head's initialisation).
      epochs, lr, batch: as in `train`.
      last_layer_only: freeze everything but the classification head.
      num_classes: if it differs from the parent's, replace the head by a freshly initialised one
        of this width (transfer learning); every other weight starts from the parent.
      name: the child's name (default: "<parent>-finetuned").
      adversarial: adversarial fine-tuning (Madry et al.), as distill's `adversarial`: each batch is
        first moved by L-inf PGD up the model's own loss against its labels.

    Returns:
      The fine-tuned child. With last_layer_only the body is frozen whole: its BatchNorm layers stay
      in eval mode, so the running statistics are the parent's too.
    """
    head_key, key = jax.random.split(key)
    head = head_name(model)
    start, derivation = model, "finetune"
    if num_classes is not None and num_classes != model.params["params"][head]["bias"].shape[0]:
        fresh = models.init(model.arch, head_key, num_classes=num_classes)
        params = {**model.params, "params": {**model.params["params"], head: fresh.params["params"][head]}}
        start, derivation = fresh.replace(params=params), "transfer"
    mask = tree_mask(start.params, lambda path, leaf: (not last_layer_only) or path[1] == head)
    attack = _attack(adversarial)
    params = fit(start, x, jnp.asarray(y, jnp.int32), key, epochs, lr, batch, "labels", mask,
                  train_stats=not last_layer_only, attack=attack)
    settings = {"epochs": epochs, "lr": lr, "batch": batch, "n_train": int(len(y)),
              "last_layer_only": last_layer_only, "num_classes": num_classes, "key": key_repr(key)}
    if attack is not None:  # absent otherwise, so the lineage of plain fine-tuning is as before
        settings["adversarial"] = dict(zip(("eps", "steps", "step_size"), attack))
    return _derived(start, params, name or f"{model.name}-finetuned", model.name, derivation, settings, x, y)


def prune(model: Model, fraction: float, x, y, key: jax.Array, finetune_epochs: int, lr: float = 1e-3,
          scope: str = "global", batch: int = 128, name: str | None = None) -> Model:
    """Magnitude pruning of every kernel, then fine-tuning with the pruned weights held at zero.

    Args:
      model: the parent.
      fraction: share of kernel weights set to zero, in [0, 1).
      x, y: fine-tuning data.
      key: PRNG key for shuffling.
      finetune_epochs: epochs of fine-tuning after pruning (0: prune only).
      lr, batch: as in `train`.
      scope: "global" ranks all kernel weights together (Han et al. 2015); "layer" prunes
        `fraction` of each kernel separately.
      name: the child's name (default: "<parent>-pruned<percent>").

    Returns:
      The pruned child; exactly round(fraction * n) weights of the ranked set(s) are zero.
    """
    if not 0.0 <= fraction < 1.0:
        raise JaxprovError(f"prune fraction must be in [0, 1), got {fraction}")
    if scope not in ("global", "layer"):
        raise JaxprovError(f"prune scope must be 'global' or 'layer', got {scope!r}")
    paths, kernels = zip(*[(p, np.abs(np.asarray(w))) for p, w in _leaves(model.params) if p[-1] == "kernel"])
    groups = [np.concatenate([k.ravel() for k in kernels])] if scope == "global" else [k.ravel() for k in kernels]
    keeps = [_keep_largest(g, fraction) for g in groups]
    flat_keep = np.concatenate(keeps)
    offsets = np.cumsum([0] + [k.size for k in kernels])
    keep_by_path = {p: flat_keep[a:b].reshape(k.shape) for p, k, a, b in zip(paths, kernels, offsets, offsets[1:])}
    mask = tree_mask(model.params, lambda path, leaf: keep_by_path.get(path, True))
    pruned = model.replace(params=jax.tree_util.tree_map(jnp.multiply, model.params, mask))
    # Adam turns a zero gradient into an exactly zero update, so masked weights stay exactly 0.
    params = fit(pruned, x, jnp.asarray(y, jnp.int32), key, finetune_epochs, lr, batch, "labels", mask)
    settings = {"fraction": fraction, "scope": scope, "finetune_epochs": finetune_epochs, "lr": lr,
              "batch": batch, "n_train": int(len(y)), "key": key_repr(key)}
    default = f"{model.name}-pruned{round(100 * fraction)}"
    return _derived(model, params, name or default, model.name, "prune", settings, x, y)


def distill(teacher: Model, student_arch: str, x, key: jax.Array, epochs: int, temperature: float = 4.0,
            hard_labels: bool = False, lr: float = 1e-3, batch: int = 128, name: str | None = None,
            adversarial: dict | None = None) -> Model:
    """Train a fresh student on the teacher's outputs for queries `x` only: no labels, no weights.

    Args:
      teacher: the queried model (only its outputs on `x` are used).
      student_arch: arch key of the student (same input spec as the teacher).
      x: query inputs in the teacher's (= student's) input space.
      key: PRNG key for the student's initialisation and shuffling.
      epochs, lr, batch: as in `train`.
      temperature: softmax temperature T of the soft targets (ignored with hard_labels).
      hard_labels: fit the teacher's argmax labels instead of its probabilities.
      name: the student's name (default: "<teacher>-distilled").
      adversarial: adversarial training of the student, e.g. {"eps": 0.3, "steps": 3,
        "step_size": 0.1} in the input space's units: each step first moves the batch by `steps`
        steps of L-inf PGD (from the clean batch, within eps and the input bounds) up the student's
        own loss against the teacher's targets for that batch, then trains on the perturbed batch.
        The targets stay the teacher's outputs on the clean queries: the teacher is queried once.
        steps defaults to 3, step_size to 2.5 * eps / steps.

    Returns:
      The student; its accuracy in meta is agreement with the teacher on the queries.
    """
    init_key, key = jax.random.split(key)
    student = models.init(student_arch, init_key)
    if student.input_spec != teacher.input_spec:
        raise JaxprovError(f"student {student.arch} takes {student.input_spec.shape} inputs but teacher "
                           f"{teacher.name} takes {teacher.input_spec.shape}; pick a student with the same input")
    attack = _attack(adversarial)
    logits = predict(teacher, x)
    labels = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if hard_labels:
        params = fit(student, x, labels, key, epochs, lr, batch, "labels", attack=attack)
    else:
        targets = jax.nn.softmax(logits / temperature, axis=-1)
        params = fit(student, x, targets, key, epochs, lr, batch, "soft", temperature=temperature, attack=attack)
    settings = {"student_arch": student.arch, "temperature": None if hard_labels else temperature,
              "hard_labels": hard_labels, "epochs": epochs, "lr": lr, "batch": batch,
              "n_queries": n_items(x), "key": key_repr(key),
              "adversarial": None if attack is None else dict(zip(("eps", "steps", "step_size"), attack))}
    return _derived(student, params, name or f"{teacher.name}-distilled", teacher.name, "distill", settings,
                    x, np.asarray(labels))


def quantize_int8(model: Model, name: str | None = None) -> Model:
    """Round every kernel to per-tensor symmetric int8 and back: w -> s * clip(round(w / s), -127, 127)
    with s = max|w| / 127 (post-training weight quantisation; biases stay float)."""

    def round_trip(path, leaf):
        if path[-1] != "kernel":
            return leaf
        scale = jnp.maximum(jnp.max(jnp.abs(leaf)), jnp.finfo(leaf.dtype).tiny) / 127.0
        return jnp.clip(jnp.round(leaf / scale), -127, 127) * scale

    params = jax.tree_util.tree_map_with_path(lambda p, leaf: round_trip(key_path(p), jnp.asarray(leaf)), model.params)
    settings = {"bits": 8, "granularity": "per-tensor", "symmetric": True, "applies_to": "kernels"}
    return _derived(model, params, name or f"{model.name}-int8", model.name, "quantize_int8", settings)


def cast_fp16(model: Model, name: str | None = None) -> Model:
    """Round every floating leaf (weights and running statistics) to float16 and back to its dtype,
    so the child is what a half-precision copy holds yet still stacks with float32 models."""

    def round_trip(path, leaf):
        leaf = jnp.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf
        cast = leaf.astype(jnp.float16).astype(leaf.dtype)
        if not bool(jnp.all(jnp.isfinite(cast) | ~jnp.isfinite(leaf))):
            raise JaxprovError(f"{model.name}: {'/'.join(key_path(path))} overflows float16 (|w| > 65504)")
        return cast

    params = jax.tree_util.tree_map_with_path(round_trip, model.params)
    settings = {"dtype": "float16", "applies_to": "all floating leaves"}
    return _derived(model, params, name or f"{model.name}-fp16", model.name, "cast_fp16", settings)


def average(models: Sequence[Model], name: str | None = None, parent: str | None = None) -> Model:
    """Uniform weight averaging ("model soup", Wortsman et al. 2022) of models of one architecture.

    Args:
      models: two or more models with equal arch keys, typically fine-tuned siblings of one parent.
      name: the child's name (default: the input names joined by "+", then "-averaged").
      parent: lineage parent (default: the inputs' common lineage parent, or None if they differ).

    Returns:
      A model whose every floating leaf (batch_stats included) is the elementwise mean of the
      inputs'; lineage {"parent": ..., "derivation": "average", "parents": [input names]}.
    """
    models = list(models)
    if len(models) < 2:
        raise JaxprovError(f"average needs at least two models, got {len(models)}")
    archs = sorted({m.arch for m in models})
    if len(archs) > 1:
        raise JaxprovError(f"average needs models of one architecture, got {', '.join(archs)}")
    names = [m.name for m in models]
    if parent is None:
        parents = {(m.meta.get("lineage") or {}).get("parent") for m in models}
        parent = parents.pop() if len(parents) == 1 else None

    def mean(*leaves):
        leaves = [jnp.asarray(leaf) for leaf in leaves]
        if not jnp.issubdtype(leaves[0].dtype, jnp.floating):
            return leaves[0]
        return jnp.mean(jnp.stack(leaves), axis=0).astype(leaves[0].dtype)

    params = jax.tree_util.tree_map(mean, *[m.params for m in models])
    settings = {"parents": names, "weights": "uniform"}
    return _derived(models[0], params, name or f"{'+'.join(names)}-averaged", parent, "average", settings)


def head_name(model: Model) -> str:
    """The top-level submodule whose output is the model's output: the classification head."""
    # Param trees pass through jax.tree_util, which sorts dict keys, so creation order is lost; the
    # head is found by running one example and matching the captured submodule outputs instead.
    x = model.input_spec.example(1)
    (output, _), state = model.module.apply(model.params, x, capture_intermediates=True, mutable=["intermediates"])
    for name, calls in state["intermediates"].items():
        if name in model.params["params"] and np.array_equal(np.asarray(calls["__call__"][0]), np.asarray(output)):
            return name
    raise JaxprovError(f"{model.arch}: no submodule produces the output directly, so there is no head to "
                       "freeze around or replace")


# ---------------------------------------------------------------------------------------------


def _attack(adversarial: dict | None) -> tuple[float, int, float] | None:
    """distill's `adversarial` dict -> (eps, steps, step_size), with defaults and checks."""
    if adversarial is None:
        return None
    unknown = set(adversarial) - {"eps", "steps", "step_size"}
    if unknown or "eps" not in adversarial:
        raise JaxprovError(f"adversarial takes eps (required), steps and step_size; got {sorted(adversarial)}")
    eps, steps = float(adversarial["eps"]), int(adversarial.get("steps", 3))
    step_size = float(adversarial.get("step_size", 2.5 * eps / max(steps, 1)))
    if eps <= 0 or steps < 1 or step_size <= 0:
        raise JaxprovError(f"adversarial needs eps > 0, steps >= 1 and step_size > 0; got {adversarial}")
    return eps, steps, step_size


def _derived(model: Model, params, name: str, parent: str | None, derivation: str, settings: dict[str, Any],
             x=None, y=None) -> Model:
    """`model` with new params, name and lineage; with (x, y) the accuracy on them is recorded too."""
    child = model.replace(params=params, name=name,
                          meta={"lineage": {"parent": parent, "derivation": derivation, **settings}})
    if x is not None:
        child = child.replace(meta={**child.meta, "accuracy": {"fit": accuracy(child, x, y)}})
    return child


def _leaves(params) -> list[tuple[tuple[str, ...], Any]]:
    return [(key_path(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]


def _keep_largest(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask keeping all but the round(fraction * n) smallest values (ties broken by position)."""
    keep = np.ones(values.size, bool)
    keep[np.argsort(values, kind="stable")[:round(fraction * values.size)]] = False
    return keep
