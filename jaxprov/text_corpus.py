"""Real text that ships with Python: sentences of the standard library's own docstrings, labelled by
the family of modules they document, and the word-level vocabulary that turns them into token ids.

The text domain of `jaxprov.datasets` ("text:base" ... "text:test") reads from here. A leaf data
source, like `jaxprov.datasets` for images: it knows sentences, labels and token ids, nothing about
models.

How the corpus is made (deterministic for one Python version; its digest is `digest()`):
- For each of six module families (`FAMILIES`: files, network, text processing, numbers,
  concurrency, data formats) every module is imported and walked in sorted name order: the module,
  its members defined there, and the attributes of its classes defined there; each object's
  `inspect.getdoc` is split into sentences at ". ", "! ", "? ".
- A sentence is its lowercase words (runs of a-z); sentences under MIN_WORDS words are dropped, and
  a sentence is kept once (its first family in `FAMILIES` order wins).
- Each family's sentences are shuffled by `numpy.random.default_rng(SEED)` and cut to
  PER_CLASS, so the six classes are balanced (PER_CLASS x 6 sentences; chance accuracy 1/6).
- The vocabulary is the VOCAB_SIZE - len(SPECIALS) most frequent words of the whole corpus (ties by
  word), after [PAD] = 0, [UNK] = 1, [CLS] = 2 (a tokenizer's vocabulary, not a model: it is built
  from all of the text, as a real tokenizer's from a large corpus; no model trains on a split it
  does not own); a sentence becomes [CLS] then its words' ids,
  cut or padded with [PAD] to SEQ_LEN tokens (attention mask: the non-[PAD] tokens).

Different Python versions hold different docstrings, so the corpus (and its digest) can differ
between them; within one version it is fixed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re

import numpy as np

# The label of a sentence: which family of standard-library modules its docstring documents.
FAMILIES: dict[str, tuple[str, ...]] = {
    "files": ("os", "pathlib", "shutil", "tempfile", "glob", "fnmatch", "filecmp", "io", "zipfile", "tarfile"),
    "network": ("socket", "ssl", "http.client", "http.server", "urllib.request", "urllib.parse", "smtplib",
                "ftplib", "email.message", "email.utils"),
    "text": ("re", "string", "textwrap", "difflib", "unicodedata", "codecs", "html", "html.parser"),
    "numbers": ("math", "cmath", "decimal", "fractions", "random", "statistics", "numbers"),
    "concurrency": ("threading", "multiprocessing", "concurrent.futures", "asyncio", "queue", "subprocess",
                    "sched", "selectors"),
    "data": ("json", "csv", "pickle", "sqlite3", "xml.etree.ElementTree", "xml.dom.minidom", "configparser",
             "plistlib", "collections", "heapq", "bisect"),
}
CLASSES = tuple(FAMILIES)
MIN_WORDS = 4
PER_CLASS = 400
SEED = 0
SEQ_LEN = 32
VOCAB_SIZE = 2000
SPECIALS = ("[PAD]", "[UNK]", "[CLS]")
PAD, UNK, CLS = 0, 1, 2
_WORD = re.compile(r"[a-z]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences() -> tuple[list[str], np.ndarray]:
    """(sentences, labels): PER_CLASS sentences of each family in `CLASSES` order, each family's
    shuffled by SEED; a sentence is its lowercase words joined by spaces."""
    text, labels = _corpus()
    return list(text), labels.copy()


def tokenize(texts, vocab: tuple[str, ...] | None = None) -> np.ndarray:
    """Token ids [n, SEQ_LEN] int32: [CLS], the words' ids ([UNK] outside the vocabulary), [PAD]s."""
    index = {w: i for i, w in enumerate(vocabulary() if vocab is None else vocab)}
    out = np.full((len(texts), SEQ_LEN), PAD, np.int32)
    for row, sentence in enumerate(texts):
        ids = [CLS] + [index.get(w, UNK) for w in sentence.split()]
        out[row, :min(len(ids), SEQ_LEN)] = ids[:SEQ_LEN]
    return out


def vocabulary() -> tuple[str, ...]:
    """The VOCAB_SIZE tokens: SPECIALS, then the corpus's most frequent words (see the module docstring)."""
    return _vocabulary()


def vocab_digest() -> str:
    """sha256 of the vocabulary (one token a line): what a text model's token ids mean."""
    return hashlib.sha256("\n".join(vocabulary()).encode()).hexdigest()


def digest() -> str:
    """sha256 of the corpus (label, tab, sentence; one a line, in order)."""
    text, labels = _corpus()
    return hashlib.sha256("\n".join(f"{y}\t{s}" for s, y in zip(text, labels)).encode()).hexdigest()


def attention_mask(ids: np.ndarray) -> np.ndarray:
    return (np.asarray(ids) != PAD).astype(np.int32)


# ---------------------------------------------------------------------------------------------


def _split(doc: str):
    for sentence in _SENTENCE_END.split(re.sub(r"\s+", " ", doc)):
        words = _WORD.findall(sentence.lower())
        if len(words) >= MIN_WORDS:
            yield " ".join(words)


def _documented(module_name: str):
    """The docstrings of a module, its own members and its own classes' attributes, in sorted order."""
    module = importlib.import_module(module_name)
    seen: set[int] = set()
    objects = [module]
    for _, member in sorted(inspect.getmembers(module), key=lambda kv: kv[0]):
        objects.append(member)
        if inspect.isclass(member) and getattr(member, "__module__", None) == module_name:
            objects.extend(v for _, v in sorted(vars(member).items(), key=lambda kv: kv[0]))
    for obj in objects:
        if obj is not module and getattr(obj, "__module__", module_name) != module_name:
            continue
        if isinstance(obj, (str, bytes, int, float, complex, tuple, list, dict, set, frozenset)) or id(obj) in seen:
            continue
        seen.add(id(obj))
        doc = inspect.getdoc(obj)
        if doc:
            yield doc


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[tuple[str, ...], np.ndarray]:
    taken: set[str] = set()
    text: list[str] = []
    labels: list[int] = []
    rng = np.random.default_rng(SEED)
    for label, family in enumerate(CLASSES):
        mine: list[str] = []
        for module_name in FAMILIES[family]:
            for doc in _documented(module_name):
                for sentence in _split(doc):
                    if sentence not in taken:
                        taken.add(sentence)
                        mine.append(sentence)
        if len(mine) < PER_CLASS:
            raise RuntimeError(f"text corpus: family {family!r} has {len(mine)} docstring sentences in this Python, "
                               f"fewer than {PER_CLASS}")
        order = rng.permutation(len(mine))[:PER_CLASS]
        text.extend(mine[i] for i in order)
        labels.extend([label] * PER_CLASS)
    return tuple(text), np.asarray(labels, np.int32)


@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    counts: dict[str, int] = {}
    for sentence in _corpus()[0]:
        for w in sentence.split():
            counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))[:VOCAB_SIZE - len(SPECIALS)]
    if len(words) < VOCAB_SIZE - len(SPECIALS):
        raise RuntimeError(f"text corpus: {len(words)} distinct words, fewer than a {VOCAB_SIZE}-token vocabulary")
    return (*SPECIALS, *words)


def token_ids() -> tuple[np.ndarray, np.ndarray]:
    """The whole corpus as (token ids [n, SEQ_LEN] int32, labels [n]): what the text domain splits."""
    text, labels = _corpus()
    return tokenize(text), labels.copy()
