"""The DATA arguments of MAP: a named domain, an image folder or an .npz, read as untrusted input.

  NAME or NAME:SPLIT  a domain of `jaxprov.datasets` (mnist, digits, mnistm, syn, mnist_invert,
                      mnist_colour, mnist_texture); a bare NAME means its training split (TRAIN_SPLIT;
                      mnist's is "base") for learning and its "test" split for evaluation;
  FOLDER              images in class sub-folders named 0, 1, ... (labelled), or images directly in
                      it (unlabelled: enough to learn a mask, not to measure accuracy);
  FILE.npz / .npy     images (key "x" or the first array; NHWC or NCHW, [0, 1] or [0, 255]) and,
                      optionally, integer labels "y" (`jaxprov.probes.array_images`).
Images are resized and their channels matched to the model (`jaxprov.datasets.adapt`). Refused with
one line: an unknown name, an empty folder, domain or array, a shape that is not images, channels
that cannot be mapped, labels outside the model's classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxprov import datasets
from jaxprov.errors import JaxprovError
from jaxprov.model import InputSpec
from jaxprov.probes import IMAGE_SUFFIXES, array_images, folder_images

TRAIN_SPLIT = {"mnist": "base"}


@dataclasses.dataclass
class Data:
    """Inputs in a model's space, labels (None when unlabelled) and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def labelled(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        if self.y is None:
            raise JaxprovError(f"{self.source}: unlabelled images, but {what} needs labels; put the images in "
                               "class folders 0/, 1/, ... or give an .npz with a 'y' array")
        return self.x, self.y


def load(arg: str, spec: InputSpec, classes: int, purpose: str = "train") -> Data:
    """DATA `arg` for a model with `spec` and `classes` outputs; purpose "train" or "test" picks a
    named domain's default split."""
    path = Path(arg)
    if path.is_dir():
        raw, labels = _folder(path, tuple(spec.shape[:2]))
    elif path.suffix.lower() in (".npz", ".npy"):
        raw, labels = array_images(path, with_labels=True)
    elif arg.split(":")[0] in datasets.SPLITS:
        name = arg if ":" in arg else f"{arg}:{TRAIN_SPLIT.get(arg, 'train') if purpose == 'train' else 'test'}"
        domain, split = datasets.parse(name)
        raw, labels = datasets.domain(domain)[split]
        arg = name
    elif path.exists():
        raise JaxprovError(f"{arg}: not a folder, .npz or .npy file; give a named domain, an image folder or an .npz")
    else:
        raise JaxprovError(f"{arg}: no such file or folder, and not a named domain "
                           f"({', '.join(n for n in datasets.SPLITS if n != 'lfw')}, optionally :SPLIT)")
    if len(raw) == 0:
        raise JaxprovError(f"{arg}: holds no images; give a non-empty domain")
    if raw.ndim != 4 or raw.shape[3] not in (1, 3):
        raise JaxprovError(f"{arg}: images of shape {tuple(raw.shape[1:])} are not [H, W, 1 or 3] images; "
                           f"the model takes {spec.shape}")
    if labels is not None:
        labels = np.asarray(labels, np.int32)
        if labels.min() < 0 or labels.max() >= classes:
            raise JaxprovError(f"{arg}: labels span {labels.min()}..{labels.max()}, the model has {classes} classes")
    return Data(np.asarray(datasets.adapt(raw, spec)), labels, str(arg))


def _folder(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    classes = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not classes:
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            raise JaxprovError(f"{path}: an empty folder (no images, no class folders 0/, 1/, ...); give a non-empty domain")
        return folder_images(path, size), None
    images, labels = [], []
    for folder in classes:
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
            continue
        x = folder_images(folder, size)
        images.append(x)
        labels.append(np.full(len(x), int(folder.name), np.int32))
    if not images:
        raise JaxprovError(f"{path}: its class folders hold no images; give a non-empty domain")
    return np.concatenate(images), np.concatenate(labels)
