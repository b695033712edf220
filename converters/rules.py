"""Conversion as data: a table of rules maps PyTorch state-dict keys onto a Flax param tree.

A `Rule` says: source keys matching `pattern` (a full-match regex) go to `target` (a "/"-separated
path in the Flax variables tree, with regex back-references), after `transform`. `plan` checks a
whole state dict against the abstract target tree (shapes only, nothing is copied) and collects
every unexpected, missing, mis-shaped and doubly-mapped key; `convert` then fills the tree.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from jaxprov.errors import ConversionError

# Every transform is a pure numpy view (transposes/reshapes), so applying it to a zero-strided
# dummy yields the target shape without touching data: `plan` uses that for shape checks.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "id": lambda w: w,
    "linear": lambda w: w.T,  # torch Linear (out, in) -> Dense kernel (in, out)
    "conv": lambda w: w.transpose(2, 3, 1, 0),  # torch Conv2d OIHW -> Flax HWIO
    "flatten_row": lambda w: w.reshape(1, -1),
}

# Keys that carry no parameters we need (BatchNorm's step counter, HF's buffered position ids).
DEFAULT_IGNORE = (r".*num_batches_tracked", r".*position_ids")


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str
    target: str
    transform: str = "id"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}")


def torch_layer_rules(source: str, target: str, kind: str) -> list[Rule]:
    """The rules for one PyTorch layer `source` (regex prefix) mapped onto Flax module `target`.

    kind: "conv" (weight, optional bias), "linear", "bn" (affine + running stats, which go to the
    separate "batch_stats" collection), "ln" (LayerNorm), "embed".
    """
    s, t = source, target
    if kind == "conv":
        return [Rule(rf"{s}\.weight", f"params/{t}/kernel", "conv"), Rule(rf"{s}\.bias", f"params/{t}/bias")]
    if kind == "linear":
        return [Rule(rf"{s}\.weight", f"params/{t}/kernel", "linear"), Rule(rf"{s}\.bias", f"params/{t}/bias")]
    if kind == "bn":
        return [Rule(rf"{s}\.weight", f"params/{t}/scale"), Rule(rf"{s}\.bias", f"params/{t}/bias"),
                Rule(rf"{s}\.running_mean", f"batch_stats/{t}/mean"),
                Rule(rf"{s}\.running_var", f"batch_stats/{t}/var")]
    if kind == "ln":
        # Old BERT checkpoints name LayerNorm params gamma / beta.
        return [Rule(rf"{s}\.(?:weight|gamma)", f"params/{t}/scale"),
                Rule(rf"{s}\.(?:bias|beta)", f"params/{t}/bias")]
    if kind == "embed":
        return [Rule(rf"{s}\.weight", f"params/{t}/embedding")]
    raise ValueError(f"unknown layer kind {kind!r}")


def _flatten(tree, prefix=()) -> dict[tuple[str, ...], object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (str(key),)))
        else:
            out[prefix + (str(key),)] = value
    return out


def _unflatten(flat: Mapping[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


@dataclasses.dataclass
class Plan:
    """source key -> (target path, transform name), plus every problem found."""

    mapping: dict[str, tuple[tuple[str, ...], str]]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def plan(shapes: Mapping[str, tuple[int, ...]], rules: Sequence[Rule], abstract,
         ignore: Iterable[str] = DEFAULT_IGNORE) -> Plan:
    """Match every source key to a target leaf and check shapes; never stops at the first problem."""
    targets = {path: tuple(leaf.shape) for path, leaf in _flatten(abstract).items()}
    compiled = [(re.compile(r.pattern), r) for r in rules]
    ignored = [re.compile(p) for p in ignore]
    mapping: dict[str, tuple[tuple[str, ...], str]] = {}
    filled: dict[tuple[str, ...], str] = {}
    unexpected, misshaped, doubled, unknown = [], [], [], []
    for key, shape in shapes.items():
        rule, match = next(((r, m) for c, r in compiled if (m := c.fullmatch(key))), (None, None))
        if rule is None:
            if not any(p.fullmatch(key) for p in ignored):
                unexpected.append(key)
            continue
        path = tuple(match.expand(rule.target).split("/"))
        if path not in targets:
            unknown.append(f"{key} -> {'/'.join(path)}")
            continue
        if path in filled:
            doubled.append(f"{key} and {filled[path]} -> {'/'.join(path)}")
            continue
        got = TRANSFORMS[rule.transform](np.broadcast_to(np.float32(0), shape)).shape
        if tuple(got) != targets[path]:
            misshaped.append(f"{key} {tuple(shape)} does not fit {'/'.join(path)} {targets[path]}")
            continue
        filled[path] = key
        mapping[key] = (path, rule.transform)
    missing = ["/".join(p) for p in targets if p not in filled and not _shape_only_mismatch(p, misshaped)]
    problems = ([f"mis-shaped: {m}" for m in misshaped]
                + [f"missing: {m}" for m in missing]
                + [f"unexpected: {u}" for u in unexpected]
                + [f"no such target: {u}" for u in unknown]
                + [f"mapped twice: {d}" for d in doubled])
    return Plan(mapping, problems)


def _shape_only_mismatch(path: tuple[str, ...], misshaped: list[str]) -> bool:
    # A leaf whose source exists but has the wrong shape is reported once, as mis-shaped.
    joined = "/".join(path)
    return any(m.split(" does not fit ")[1].startswith(joined + " ") for m in misshaped)


def misfit_error(source: str, arch: str, problems: list[str], suggestion: str | None = None) -> ConversionError:
    """The one error for weights that do not fit `arch`: every problem, and the key that would fit."""
    hint = f"; did you mean --arch {suggestion}?" if suggestion and suggestion != arch else ""
    return ConversionError(f"{source}: the state dict does not fit {arch} ({len(problems)} problems{hint})", problems)


def convert(state_dict: Mapping[str, np.ndarray], rules: Sequence[Rule], abstract, *, source: str,
            arch: str, ignore: Iterable[str] = DEFAULT_IGNORE, progress: Callable | None = None) -> dict:
    """Fill the abstract Flax tree from a state dict. Raises ConversionError listing every problem.

    Weights are returned as float32 numpy arrays (fp16 / bf16 / int checkpoints are widened), so
    converted models compute in one precision; the source dtype is kept in the model's metadata.
    """
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    result = plan(shapes, rules, abstract, ignore)
    if not result.ok:
        raise misfit_error(source, arch, result.problems)
    flat, bad = {}, []
    items = list(result.mapping.items())
    for key, (path, transform) in (progress(items) if progress else items):
        value = np.asarray(TRANSFORMS[transform](np.asarray(state_dict[key]))).astype(np.float32)
        if not np.all(np.isfinite(value)):
            bad.append(key)
        flat[path] = np.ascontiguousarray(value)
    if bad:
        warnings.warn(f"{source}: {len(bad)} tensors hold NaN or Inf values: {', '.join(bad[:10])}"
                      + (" ..." if len(bad) > 10 else ""), NonFiniteWeightsWarning, stacklevel=2)
    return _unflatten(flat)


class NonFiniteWeightsWarning(UserWarning):
    """Converted weights contain NaN or Inf: the model loads, but its outputs will be garbage."""


def tree_shapes(tree) -> dict[str, tuple[int, ...]]:
    """{'a/b/c': shape} for a params tree (used in tests and error messages)."""
    return {"/".join(p): tuple(np.shape(v)) for p, v in _flatten(jax.tree_util.tree_map(lambda x: x, tree)).items()}
