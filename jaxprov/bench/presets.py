"""The reuse benchmark's presets: which models each group holds, how they are trained, and how each
method is configured (see `jaxprov.bench.reuse` for the protocol)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

GROUPS = ("val", "test")
REFERENCE_ROLES = ("base", "independent")

# reuse type -> how it is made from its parent (recipe fields besides name/parent/seed).
# "{other}" is the preset's other architecture for the parent's arch.
REUSE_TYPES: dict[str, dict[str, Any]] = {
    "finetune-last": {"op": "finetune", "data": "mnist:finetune", "last_layer_only": True, "stage": "finetune"},
    "finetune-all": {"op": "finetune", "data": "mnist:finetune", "stage": "finetune"},
    "transfer-domain": {"op": "finetune", "data": "digits:train", "stage": "finetune"},
    "transfer-task": {"op": "finetune", "data": "lfw:train", "num_classes": 2, "stage": "transfer"},
    "prune-20": {"op": "prune", "fraction": 0.2, "data": "mnist:finetune", "stage": "prune"},
    "prune-50": {"op": "prune", "fraction": 0.5, "data": "mnist:finetune", "stage": "prune"},
    "prune-80": {"op": "prune", "fraction": 0.8, "data": "mnist:finetune", "stage": "prune"},
    "quantize-int8": {"op": "quantize_int8"},
    "cast-fp16": {"op": "cast_fp16"},
    "distill-same-arch": {"op": "distill", "arch": "{same}", "data": "mnist:query", "temperature": 4.0,
                          "stage": "extract"},
    "extract-labels-same-arch": {"op": "distill", "arch": "{same}", "data": "mnist:query", "hard_labels": True,
                                 "stage": "extract"},
    "extract-probs-same-arch": {"op": "distill", "arch": "{same}", "data": "mnist:query", "temperature": 1.0,
                                "stage": "extract"},
    "extract-labels-other-arch": {"op": "distill", "arch": "{other}", "data": "mnist:query", "hard_labels": True,
                                  "stage": "extract"},
    "extract-probs-other-arch": {"op": "distill", "arch": "{other}", "data": "mnist:query", "temperature": 1.0,
                                 "stage": "extract"},
    "extract-adversarial": {"op": "distill", "arch": "{same}", "data": "mnist:query", "hard_labels": True,
                            "adversarial": "{adversarial}", "stage": "extract"},
    "average-siblings": {"op": "average"},
}
SIBLING = "finetune-all-sibling"  # the second fine-tuned copy that "average-siblings" averages with


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything that determines a benchmark run besides the code.

    bases: group -> (arch, seed) of each base model.
    independents: group -> (arch, seed, data split, children reuse types) of each independent model.
    nulls: group -> (arch, seed) of each null model (trained like a base).
    stages: stage -> {"epochs", "lr"} for train / finetune / transfer / prune / extract.
    """

    name: str
    bases: Mapping[str, Sequence[tuple[str, int]]]
    independents: Mapping[str, Sequence[tuple[str, int, str, Sequence[str]]]]
    nulls: Mapping[str, Sequence[tuple[str, int]]]
    other_arch: Mapping[str, str]
    stages: Mapping[str, Mapping[str, float]]
    adversarial: Mapping[str, float]
    method_config: Mapping[str, Mapping[str, Any]]
    methods: Sequence[str] = ("ddv", "gradient_field", "sac", "ipguard", "cka", "weights", "mistakes")
    # Probes come from MNIST's held-out split: no zoo model trained on it and no attacker queried it.
    seeds: str = "mnist:test"
    n_boot: int = 1000
    device_note: str = "CPU"
    # The data domain every split of REUSE_TYPES and of the bases is read from ("mnist:finetune" ->
    # "<domain>:finetune"), and the reuse types made from each base (None: all of REUSE_TYPES).
    domain: str = "mnist"
    reuse_types: Sequence[str] | None = None

    def reuses(self) -> list[str]:
        """The reuse types derived from each base, in REUSE_TYPES order."""
        return [t for t in REUSE_TYPES if self.reuse_types is None or t in self.reuse_types]

    def split(self, name_split: str) -> str:
        """A REUSE_TYPES data split ("mnist:finetune") in this preset's domain."""
        domain, _, split = name_split.partition(":")
        return f"{self.domain}:{split}" if domain == "mnist" else name_split


_SMALL_STAGES = {
    "train": {"epochs": 6, "lr": 2e-3},
    "finetune": {"epochs": 3, "lr": 3e-4},
    "transfer": {"epochs": 6, "lr": 1e-3},
    "prune": {"epochs": 3, "lr": 1e-3},
    "extract": {"epochs": 10, "lr": 2e-3},
}
_SMALL_METHODS = {
    "ddv": {"n_seeds": 200, "eps": 0.974, "step": 0.162},
    "gradient_field": {"n_seeds": 64, "steps": 50},
    "sac": {"n_seeds": 100},
    "ipguard": {"n_seeds": 100},
    "cka": {"n_seeds": 200},
    "mistakes": {"n_seeds": 1000},
}
_SMALL_OTHER = {"mlp": "lenet", "lenet": "mlp"}
_ADV_SMALL = {"eps": 0.5, "steps": 3, "step_size": 0.25}  # normalised units (MNIST std 0.3081): 0.15 of a pixel

_CIFAR = ("cifar_resnet20", "cifar_vgg16_bn", "cifar_mobilenet")


def _full_independents(s: int) -> list:
    return ([(a, s + 11 + i, "mnist:base", ("finetune-all", "extract-probs-other-arch")) for i, a in enumerate(_CIFAR)]
            + [(a, s + 14 + i, "mnist:base", ()) for i, a in enumerate(_CIFAR)]
            + [("cifar_resnet20", s + 17, "digits:train", ("finetune-all",))])


PRESETS: dict[str, Preset] = {
    # Runs in the test suite on a 2-core CPU: MLP and LeNet, one base of each per group.
    "ci": Preset(
        name="ci",
        bases={"val": [("mlp", 101), ("lenet", 102)], "test": [("mlp", 201), ("lenet", 202)]},
        independents={"val": [("mlp", 111, "mnist:base", ("finetune-all",)),
                              ("lenet", 112, "mnist:base", ()),
                              ("mlp", 113, "digits:train", ())],
                      "test": [("mlp", 211, "mnist:base", ("finetune-all",)),
                               ("lenet", 212, "mnist:base", ()),
                               ("mlp", 213, "digits:train", ())]},
        nulls={"val": [("mlp", 121), ("mlp", 122), ("lenet", 123), ("lenet", 124)],
               "test": [("mlp", 221), ("mlp", 222), ("lenet", 223), ("lenet", 224)]},
        other_arch=_SMALL_OTHER, stages=_SMALL_STAGES, adversarial=_ADV_SMALL,
        # A 32 x 25 field (a quarter of 64 x 50) still gives AUC 1.0 on every weight-preserving reuse
        # here and keeps the suite's run of this preset short.
        method_config={**_SMALL_METHODS, "gradient_field": {"n_seeds": 32, "steps": 25}},
        n_boot=300),
    # The same protocol at a size a CPU runs in tens of minutes: three bases per group.
    "cpu": Preset(
        name="cpu",
        bases={"val": [("mlp", 101), ("lenet", 102), ("mlp", 103)],
               "test": [("mlp", 201), ("lenet", 202), ("lenet", 203)]},
        independents={g: [("mlp", s + 11, "mnist:base", ("finetune-all", "extract-probs-same-arch")),
                          ("lenet", s + 12, "mnist:base", ("finetune-all", "extract-probs-other-arch")),
                          ("mlp", s + 13, "mnist:base", ()),
                          ("lenet", s + 14, "mnist:base", ()),
                          ("mlp", s + 15, "digits:train", ("finetune-all",)),
                          ("lenet", s + 16, "digits:train", ())]
                      for g, s in (("val", 100), ("test", 200))},
        nulls={g: [("mlp", s + 21), ("mlp", s + 22), ("mlp", s + 23),
                   ("lenet", s + 24), ("lenet", s + 25), ("lenet", s + 26),
                   ("mlp", s + 27), ("mlp", s + 28), ("lenet", s + 29), ("lenet", s + 30)]
               for g, s in (("val", 100), ("test", 200))},
        other_arch=_SMALL_OTHER, stages={**_SMALL_STAGES, "train": {"epochs": 8, "lr": 2e-3}},
        adversarial=_ADV_SMALL, method_config={**_SMALL_METHODS, "gradient_field": {"n_seeds": 128, "steps": 50},
                                               "ddv": {**_SMALL_METHODS["ddv"], "n_seeds": 300}},
        n_boot=1000),
    # The GPU preset: CIFAR-size ResNet-20, VGG-16-BN and MobileNet on MNIST at 32x32x3.
    "full": Preset(
        name="full",
        bases={"val": [("cifar_resnet20", 101), ("cifar_vgg16_bn", 102), ("cifar_mobilenet", 103)],
               "test": [("cifar_resnet20", 201), ("cifar_vgg16_bn", 202), ("cifar_mobilenet", 203)]},
        independents={g: _full_independents(s) for g, s in (("val", 100), ("test", 200))},
        nulls={g: [(a, s + 20 + i) for i, a in enumerate(_CIFAR * 2)] for g, s in (("val", 100), ("test", 200))},
        other_arch={"cifar_resnet20": "cifar_mobilenet", "cifar_vgg16_bn": "cifar_resnet20",
                    "cifar_mobilenet": "cifar_vgg16_bn"},
        stages={"train": {"epochs": 15, "lr": 1e-3}, "finetune": {"epochs": 5, "lr": 1e-4},
                "transfer": {"epochs": 10, "lr": 5e-4}, "prune": {"epochs": 5, "lr": 5e-4},
                "extract": {"epochs": 20, "lr": 1e-3}},
        adversarial={"eps": 0.03, "steps": 5, "step_size": 0.01},
        method_config={"ddv": {"n_seeds": 300, "eps": 1.2, "step": 0.2},
                       "gradient_field": {"n_seeds": 256, "steps": 50},
                       "sac": {"n_seeds": 100}, "ipguard": {"n_seeds": 100}, "cka": {"n_seeds": 300},
                       "mistakes": {"n_seeds": 1000, "min_probes": 5}},
        device_note="GPU"),
}


# Text (issue 11 point 4): tiny BERT classifiers of the text domain (jaxprov.text_corpus: docstring
# sentences of the Python standard library, 6 classes), two configs ("bert-text": 2 layers, hidden
# 64; "bert-text-small": 1 layer, hidden 32). The reuse types that apply to a token-id model (no
# adversarial extraction: token ids are not perturbed; no transfer: the text domain is one), and the
# methods that read token inputs (DDV, SAC, IPGuard and mistakes perturb continuous inputs).
TEXT_REUSE_TYPES = ("finetune-last", "finetune-all", "prune-50", "quantize-int8", "distill-same-arch",
                    "extract-labels-same-arch", "extract-labels-other-arch")
PRESETS["text"] = Preset(
    name="text",
    bases={"val": [("bert-text", 101), ("bert-text", 102), ("bert-text", 103)],
           "test": [("bert-text", 201), ("bert-text", 202), ("bert-text", 203)]},
    independents={g: [("bert-text", s + 11, "text:base", ("finetune-all",)),
                      ("bert-text-small", s + 12, "text:base", ()),
                      ("bert-text", s + 13, "text:base", ())]
                  for g, s in (("val", 100), ("test", 200))},
    nulls={g: [("bert-text", s + 21), ("bert-text", s + 22), ("bert-text-small", s + 23),
               ("bert-text-small", s + 24)] for g, s in (("val", 100), ("test", 200))},
    other_arch={"bert-text": "bert-text-small", "bert-text-small": "bert-text"},
    stages={"train": {"epochs": 10, "lr": 2e-3}, "finetune": {"epochs": 3, "lr": 3e-4},
            "prune": {"epochs": 3, "lr": 1e-3}, "extract": {"epochs": 10, "lr": 2e-3}},
    adversarial={}, method_config={"gradient_field": {"n_seeds": 64, "steps": 25}, "cka": {"n_seeds": 200}},
    methods=("gradient_field", "cka", "weights"), seeds="text:test", n_boot=1000,
    domain="text", reuse_types=TEXT_REUSE_TYPES)
# The text protocol at test-suite size (tests/test_text.py): the smaller config only, two bases per
# group with three weight-sharing children each, two independents, no nulls, short training.
PRESETS["text-ci"] = dataclasses.replace(
    PRESETS["text"], name="text-ci",
    bases={"val": [("bert-text-small", 101), ("bert-text-small", 102)],
           "test": [("bert-text-small", 201), ("bert-text-small", 202)]},
    independents={g: [("bert-text-small", s + 11, "text:base", ()), ("bert-text-small", s + 12, "text:base", ())]
                  for g, s in (("val", 100), ("test", 200))},
    nulls={"val": [], "test": []},
    stages={"train": {"epochs": 5, "lr": 3e-3}, "finetune": {"epochs": 2, "lr": 3e-4},
            "prune": {"epochs": 1, "lr": 1e-3}, "extract": {"epochs": 5, "lr": 2e-3}},
    reuse_types=("finetune-all", "prune-50", "quantize-int8"), n_boot=200)


# A learned detector (`jaxprov.dna`) trains on lineages of its own: the preset's protocol (every reuse
# type, independents and their children, nulls) from other base models and seeds, so that no model of
# the val group (which fits the default verdict) or of the test group (which scores it) is a relative
# of anything it was trained on.
DNA_TRAINING_GROUP = "train"
DNA_TRAINING_SEEDS = 300  # val seeds are 1xx, test seeds 2xx


def dna_training_preset(preset: Preset, n_bases: int = 4) -> Preset:
    """The preset's protocol as one "train" group of `n_bases` bases (MLP and LeNet alternating for
    the small presets), its independents and nulls, all from seeds 3xx."""
    s = DNA_TRAINING_SEEDS
    archs = list(dict.fromkeys(a for a, _ in preset.bases["val"]))
    bases = [(archs[i % len(archs)], s + 1 + i) for i in range(n_bases)]
    shift = lambda seed: seed % 100 + s  # noqa: E731 - the val group's seed pattern moved to 3xx
    independents = [(a, shift(seed), data, children) for a, seed, data, children in preset.independents["val"]]
    nulls = [(a, shift(seed)) for a, seed in preset.nulls["val"]]
    g = DNA_TRAINING_GROUP
    return dataclasses.replace(preset, name=f"{preset.name}-dna-train", bases={g: bases},
                               independents={g: independents}, nulls={g: nulls})
