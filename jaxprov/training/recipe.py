"""The zoo builder: a whole zoo with known lineage as one JSON-able dict (a recipe), built deterministically
and resumably.

A recipe is `{"name": str, "models": [entry, ...]}` (plus an optional "description"). Each entry
names one model and the `jaxprov.training.derive` operation that makes it, with that operation's settings:

  {"name": "b0", "op": "train", "arch": "mlp", "data": "mnist:base", "seed": 1, "epochs": 8, "lr": 1e-3}
  {"name": "b0-ft", "op": "finetune", "parent": "b0", "data": "mnist:finetune", "seed": 2, "epochs": 3,
   "lr": 3e-4, "last_layer_only": false, "num_classes": null,    # num_classes != parent's: transfer
   "adversarial": null}                                          # or {"eps": ..., "steps": ...}: Madry et al.
  {"name": "e0", "op": "train_exits", "arch": "lenet_exits", "data": "mnist:base", "seed": 5, "epochs": 8}
  {"name": "e0-ics", "op": "train_heads", "parent": "e0", "data": "mnist:finetune", "seed": 6, "epochs": 3}
  {"name": "b0-p50", "op": "prune", "parent": "b0", "fraction": 0.5, "data": "mnist:finetune", "seed": 3,
   "finetune_epochs": 2, "lr": 1e-3, "scope": "global"}
  {"name": "b0-q", "op": "quantize_int8", "parent": "b0"}   {"name": "b0-h", "op": "cast_fp16", "parent": "b0"}
  {"name": "b0-x", "op": "distill", "parent": "b0", "arch": "lenet", "data": "mnist:query", "seed": 4,
   "epochs": 10, "lr": 2e-3, "temperature": 4.0, "hard_labels": false, "adversarial": null}
  {"name": "b0-avg", "op": "average", "parents": ["b0-ftA", "b0-ftB"], "parent": "b0"}

Any entry may add "batch" (examples per training step, default 128) and the free-form labels "role",
"reuse" and "group", which are copied into the model's meta for benchmarks to read. Data splits are
named "<domain>:<split>" (see jaxprov.datasets); the PRNG key of an entry is PRNGKey(seed), so one
recipe always gives bitwise the same params on one backend.

Every model is stored under `root/<name>`, its meta holding `"recipe": {"entry", "digest"}`. The
digest covers the entry's build settings, its parents' digests and `ZOO_VERSION`, so a second build
loads what is current and rebuilds exactly the changed entries and their descendants.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax

from jaxprov import datasets
from jaxprov import models as model_registry
from jaxprov import store as model_store
from jaxprov.errors import JaxprovError
from jaxprov.model import Model
from jaxprov.training import derive
from jaxprov.training.loop import accuracy

# What an entry builds besides its settings: the training loop, the derivations, the data domains
# and this builder. Bump it by hand when a change there changes what any entry builds (its params
# or meta); every stored zoo model is then rebuilt. Edits that change nothing built (docstrings,
# refactors, new ops) leave it alone, so stored zoos stay valid.
ZOO_VERSION = 1
DEFAULT_BATCH = 128
ANNOTATIONS = ("role", "reuse", "group")  # copied into meta; not part of the digest
_NONE = type(None)  # JSON null
COMMON_FIELDS = {"name": (str,), "op": (str,), "batch": (int,),
                 **{k: (str, _NONE) for k in ANNOTATIONS}}
# op -> (required fields, optional fields), each {field: accepted JSON types}.
OPS: dict[str, tuple[dict[str, tuple], dict[str, tuple]]] = {
    "train": ({"arch": (str,), "data": (str,), "seed": (int,), "epochs": (int,)},
              {"lr": (float,)}),
    "train_exits": ({"arch": (str,), "data": (str,), "seed": (int,), "epochs": (int,)},
                    {"lr": (float,)}),
    "train_heads": ({"parent": (str,), "data": (str,), "seed": (int,), "epochs": (int,)},
                    {"lr": (float,)}),
    "finetune": ({"parent": (str,), "data": (str,), "seed": (int,), "epochs": (int,)},
                 {"lr": (float,), "last_layer_only": (bool,), "num_classes": (int, _NONE),
                  "adversarial": (dict, _NONE)}),
    "prune": ({"parent": (str,), "fraction": (float,), "data": (str,), "seed": (int,),
               "finetune_epochs": (int,)},
              {"lr": (float,), "scope": (str,)}),
    "quantize_int8": ({"parent": (str,)}, {}),
    "cast_fp16": ({"parent": (str,)}, {}),
    "distill": ({"parent": (str,), "arch": (str,), "data": (str,), "seed": (int,), "epochs": (int,)},
                {"lr": (float,), "temperature": (float,), "hard_labels": (bool,), "adversarial": (dict, _NONE)}),
    "average": ({"parents": (list,)}, {"parent": (str, _NONE)}),
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}")  # a safe directory name


def validate(recipe: Mapping) -> list[dict]:
    """Check a recipe and return its entries in build order (parents first, else recipe order).

    Raises:
      JaxprovError: one line naming the entry, for an unknown op, a missing, unknown or mistyped
        field, an unknown data split or arch, a duplicate name, an unknown parent or a cycle.
    """
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("name"), str):
        raise JaxprovError('a recipe is a dict {"name": str, "models": [entry, ...]}')
    label = f"recipe {recipe['name']!r}"
    unknown = sorted(set(recipe) - {"name", "models", "description"})
    if unknown:
        raise JaxprovError(f"{label}: unknown field(s) {', '.join(unknown)}; expected name, models, description")
    entries = recipe.get("models")
    if not isinstance(entries, list) or not entries:
        raise JaxprovError(f"{label}: 'models' must be a non-empty list of entries")
    by_name: dict[str, dict] = {}
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        where = f"{label}, entry {name!r}" if isinstance(name, str) else f"{label}, entry #{i}"
        _check_entry(entry, where)
        if name in by_name:
            raise JaxprovError(f"{where}: duplicate name")
        by_name[name] = dict(entry)
    for name, entry in by_name.items():
        for dep in _dependencies(entry):
            if dep not in by_name:
                raise JaxprovError(f"{label}, entry {name!r}: unknown parent {dep!r}")
    return [by_name[n] for n in _build_order(by_name, label)]


def build(recipe: Mapping, root: str | os.PathLike, cache=None,
          progress: Callable[[str, str], None] | None = None, store=None) -> dict[str, Model]:
    """Build (or load what is current of) every model of `recipe` under `root`.

    Args:
      recipe: the recipe dict (see the module docstring); checked by `validate` before any work.
      root: folder of the zoo; model `name` lives in `root/name` (written atomically). A file lock
        makes concurrent builds of one root wait for each other.
      cache: a jaxprov.cache.SignatureCache to register every model (and so its lineage) with;
        `store=` is its deprecated old name.
      progress: called as progress(name, "built" | "loaded") after each entry.

    Returns:
      {name: Model} in recipe order, each as stored. meta holds "lineage" (from derive), "recipe"
      ({"entry": the entry, "digest": its digest}), "accuracy" (at least "test": accuracy on the
      test split of the entry's data domain, inherited from the parent for ops without data) and
      the entry's "role", "reuse" and "group" when given.
    """
    ordered = validate(recipe)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    built: dict[str, Model] = {}
    digests: dict[str, str] = {}
    domains: dict[str, str] = {}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for entry in ordered:
            name, deps = entry["name"], _dependencies(entry)
            digests[name] = _entry_digest(entry, [digests[d] for d in deps])
            domains[name] = datasets.parse(entry["data"])[0] if "data" in entry else domains[deps[0]]
            directory = root / name
            if _stored_digest(directory) == digests[name]:
                built[name] = _refresh_annotations(model_store.load_model(directory), entry, directory)
                action = "loaded"
            else:
                try:
                    model = _make(entry, built)
                except JaxprovError as err:  # e.g. a student whose input differs from its teacher's
                    raise JaxprovError(f"recipe {recipe['name']!r}, entry {name!r}: {err}") from None
                x_test, y_test = datasets.inputs(f"{domains[name]}:test", model.input_spec)
                annotations = {k: entry[k] for k in ANNOTATIONS if k in entry}
                model = model.replace(meta={
                    **model.meta, **annotations, "recipe": {"entry": entry, "digest": digests[name]},
                    "accuracy": {**model.meta.get("accuracy", {}), "test": accuracy(model, x_test, y_test)}})
                # Reload what was written, so a fresh build and a resumed one return the same objects.
                built[name] = model_store.load_model(model_store.save_model(model, directory, overwrite=True))
                action = "built"
            if progress is not None:
                progress(name, action)
    result = {entry["name"]: built[entry["name"]] for entry in recipe["models"]}
    if store is not None:
        warnings.warn("training.recipe.build: store= is now called cache= (the signature cache); store= will be "
                      "removed in the next release", DeprecationWarning, stacklevel=2)
        cache = store if cache is None else cache
    if cache is not None:
        cache.register_models(list(result.values()))
    return result


# ---------------------------------------------------------------------------------------------


def _make(entry: dict, built: Mapping[str, Model]) -> Model:
    """Run the entry's derive operation on its parents, looked up in the models `built` so far."""
    op, name = entry["op"], entry["name"]
    key = jax.random.PRNGKey(entry["seed"]) if "seed" in entry else None
    batch = entry.get("batch", DEFAULT_BATCH)
    lr = {"lr": entry["lr"]} if "lr" in entry else {}
    if op in ("train", "train_exits"):
        x, y = datasets.inputs(entry["data"], model_registry.create(entry["arch"])[2])
        trainer = derive.train if op == "train" else derive.train_exits
        return trainer(entry["arch"], x, y, key, entry["epochs"], batch=batch, name=name, **lr)
    if op == "average":
        return derive.average([built[p] for p in entry["parents"]], name=name, parent=entry.get("parent"))
    parent = built[entry["parent"]]
    if op == "quantize_int8":
        return derive.quantize_int8(parent, name=name)
    if op == "cast_fp16":
        return derive.cast_fp16(parent, name=name)
    x, y = datasets.inputs(entry["data"], parent.input_spec)
    if op == "train_heads":
        return derive.train_exits(parent, x, y, key, entry["epochs"], heads_only=True, batch=batch, name=name, **lr)
    if op == "finetune":
        return derive.finetune(parent, x, y, key, entry["epochs"], last_layer_only=entry.get("last_layer_only", False),
                               num_classes=entry.get("num_classes"), batch=batch, name=name,
                               adversarial=entry.get("adversarial"), **lr)
    if op == "prune":
        return derive.prune(parent, entry["fraction"], x, y, key, entry["finetune_epochs"],
                            scope=entry.get("scope", "global"), batch=batch, name=name, **lr)
    if op == "distill":
        return derive.distill(parent, entry["arch"], x, key, entry["epochs"], temperature=entry.get("temperature", 4.0),
                              hard_labels=entry.get("hard_labels", False), adversarial=entry.get("adversarial"),
                              batch=batch, name=name, **lr)
    raise AssertionError(op)  # validate() admits only the ops above


def _check_entry(entry: Any, where: str) -> None:
    if not isinstance(entry, Mapping):
        raise JaxprovError(f"{where}: an entry is a dict with at least 'name' and 'op'")
    for field in ("name", "op"):
        if not isinstance(entry.get(field), str):
            raise JaxprovError(f"{where}: missing or non-string {field!r}")
    if not _NAME.fullmatch(entry["name"]):
        raise JaxprovError(f"{where}: the name must be a plain directory name (letters, digits, ._+=@-; "
                           "at most 128 characters, not starting with a symbol)")
    if entry["op"] not in OPS:
        raise JaxprovError(f"{where}: unknown op {entry['op']!r}; use one of {', '.join(OPS)}")
    required, optional = OPS[entry["op"]]
    missing = [f for f in required if f not in entry]
    if missing:
        raise JaxprovError(f"{where}: op {entry['op']} needs field(s) {', '.join(missing)}")
    allowed = {**COMMON_FIELDS, **required, **optional}
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise JaxprovError(f"{where}: unknown field(s) {', '.join(unknown)} for op {entry['op']}; "
                           f"allowed: {', '.join(allowed)}")
    for field, value in entry.items():
        if not _is_a(value, allowed[field]):
            kinds = " or ".join("null" if t is _NONE else t.__name__ for t in allowed[field])
            raise JaxprovError(f"{where}: field {field!r} must be {kinds}, got {value!r}")
    for field in ("seed", "epochs", "finetune_epochs"):
        if entry.get(field, 0) < 0:
            raise JaxprovError(f"{where}: field {field!r} must be >= 0, got {entry[field]}")
    if entry.get("batch", 1) < 1:
        raise JaxprovError(f"{where}: field 'batch' must be >= 1, got {entry['batch']}")
    if entry["op"] == "average":
        parents = entry["parents"]
        if len(parents) < 2 or not all(isinstance(p, str) for p in parents) or len(set(parents)) != len(parents):
            raise JaxprovError(f"{where}: 'parents' must list >= 2 distinct model names, got {parents!r}")
    try:
        if "data" in entry:
            datasets.parse(entry["data"])
        if "arch" in entry:
            model_registry.canonical(entry["arch"])
    except JaxprovError as err:
        raise JaxprovError(f"{where}: {err}") from None


def _is_a(value: Any, kinds: tuple) -> bool:
    if isinstance(value, bool):  # JSON true/false are not numbers
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def _dependencies(entry: Mapping) -> list[str]:
    """The entries this one is made from: its parents, then the lineage `parent` of an average."""
    deps = list(entry.get("parents", []))
    if entry.get("parent") is not None and entry["parent"] not in deps:
        deps.append(entry["parent"])
    return deps


def _build_order(by_name: dict[str, dict], label: str) -> list[str]:
    """Recipe order, except that every entry comes after the entries it depends on."""
    done: set[str] = set()
    order: list[str] = []
    pending = list(by_name)
    while pending:
        ready = [n for n in pending if all(d in done for d in _dependencies(by_name[n]))]
        if not ready:
            # Every blocked entry waits on another blocked one, so following those edges must loop.
            path = [pending[0]]
            while (step := next(d for d in _dependencies(by_name[path[-1]]) if d not in done)) not in path:
                path.append(step)
            cycle = path[path.index(step):] + [step]
            raise JaxprovError(f"{label}, entry {cycle[0]!r}: dependency cycle {' -> '.join(cycle)}")
        done.update(ready)
        order.extend(ready)
        pending = [n for n in pending if n not in done]
    return order


def _entry_digest(entry: Mapping, parent_digests: Sequence[str]) -> str:
    settings = {k: v for k, v in entry.items() if k not in ANNOTATIONS}
    payload = json.dumps({"entry": settings, "parents": list(parent_digests), "zoo_version": ZOO_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _stored_digest(directory: Path) -> str | None:
    """The recipe digest of the model stored in `directory`; None if there is none or it is unreadable."""
    try:
        return model_store.read_meta(directory).get("recipe", {}).get("digest")
    except JaxprovError:
        return None


def _refresh_annotations(model: Model, entry: dict, directory: Path) -> Model:
    """A stored model whose role/reuse/group labels changed gets the new ones (its params stay)."""
    annotations = {k: entry[k] for k in ANNOTATIONS if k in entry}
    meta = {k: v for k, v in model.meta.items() if k not in ANNOTATIONS}
    meta = {**meta, **annotations, "recipe": {**meta["recipe"], "entry": entry}}
    if meta == model.meta:
        return model
    model = model.replace(meta=meta)
    model_store.save_model(model, directory, overwrite=True)
    return model
