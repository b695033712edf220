"""Every model in a folder: what `jaxprov scan DIR` and `--null DIR` read.

A folder may hold checkpoint files, Hugging Face directories and stored models, and also entries an
attacker or an accident put there. Each entry is loaded on its own: one that cannot be read (corrupt,
hostile, unreadable, not a regular file) becomes one line in the returned failures and never stops
the others. FIFOs, devices and sockets are never opened (opening a FIFO blocks until a writer
comes); files whose suffix is not a checkpoint's are ignored.
"""

from __future__ import annotations

import os
import stat
import warnings

from jaxprov.errors import JaxprovError
from jaxprov.model import Model


def load_zoo_directory(directory: str | os.PathLike) -> tuple[list[Model], list[str]]:
    """Every model in a folder (checkpoint files, HF directories, stored models), plus one line per
    entry that was skipped. Entries are visited in sorted order; names are the entry names (file
    stems for files). Hidden entries (".name") are ignored."""
    from converters.export_archive import SUFFIX as EXPORT_SUFFIX
    from converters.readers import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES
    from jaxprov import api, arguments

    directory = arguments.path(directory, "folder")
    try:
        if not directory.is_dir():
            raise JaxprovError(f"{directory}: not a directory")
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as err:
        from jaxprov.store import os_error_line

        raise JaxprovError(os_error_line(directory, err, "cannot list the folder")) from None
    if not entries:
        raise JaxprovError(f"{directory}: empty folder; put checkpoints or converted models in it")
    models, failures, names = [], [], {}
    for entry in entries:
        try:
            mode = os.stat(entry).st_mode
        except OSError as err:
            failures.append(f"{entry.name}: cannot read ({err.strerror or type(err).__name__})")
            continue
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            failures.append(f"{entry.name}: not a regular file or folder (a FIFO, device or socket); not opened")
            continue
        if stat.S_ISREG(mode) and entry.suffix not in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + (EXPORT_SUFFIX,):
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = api.load(entry)
            for w in caught:
                failures.append(f"{entry.name}: warning: {w.message}")
            name = entry.stem if stat.S_ISREG(mode) else entry.name
            if name in names:  # "a.pt" beside "a.safetensors": a zoo's names must be unique
                failures.append(f"{entry.name}: skipped, its name {name!r} is taken by {names[name]}; rename one")
                continue
            names[name] = entry.name
            models.append(model.replace(name=name))
        except JaxprovError as err:
            failures.append(str(err))
        except Exception as err:  # noqa: BLE001 - one hostile entry must not end the scan of the others
            # Not a JaxprovError: a reader bug or a resource limit (MemoryError, RecursionError).
            failures.append(f"{entry.name}: could not be read ({type(err).__name__}: {_one_line(err)}); "
                            "skipped; please report this file's kind to the jaxprov developers")
    return models, failures


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."
