"""Stored signatures: content-addressed files beside an SQLite manifest, reused across runs.

The DESIGN's rule "a repeated or interrupted run recomputes nothing that is already stored",
applied to the signatures of "The one idea" (one vector per model on shared probes). A signature
is a pure function of the model's weights, the method's config, the probes and the compute
precision, so it is stored under

    key = sha256(params_sha256 | method.config_digest() | probes.digest | dtype)

as `signatures/<key[:2]>/<key>.npy`. `manifest.sqlite` records what each file is (model, method,
probes, the file's own sha256), which models and probes were seen, and every run with its
arguments and library versions. Files are written to a temporary name and renamed into place,
manifest rows in transactions; every read re-hashes the file, so a corrupted or vanished entry is
dropped and recomputed instead of silently returning wrong numbers. The manifest is untrusted input
too: file paths are derived from keys, never read from it; a manifest SQLite reports as damaged is
moved aside (`manifest.sqlite.corrupt-*`) with a warning and a new one is started, which costs
one recomputation and nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sqlite3
import stat
import sys
import time
import uuid
import warnings
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from jaxprov import engine
from jaxprov.atomic import atomic_write
from jaxprov.engine import EngineConfig, Signatures
from jaxprov.errors import StoreError
from jaxprov.methods.base import DEAD_NORM, Method
from jaxprov.model import Model
from jaxprov.probes import Probes
from jaxprov.identity import model_digest
from jaxprov.version import __version__

SCHEMA_VERSION = 1
MANIFEST = "manifest.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    params_sha256 TEXT PRIMARY KEY, name TEXT, arch TEXT, source_path TEXT, source_sha256 TEXT,
    lineage TEXT);
CREATE TABLE IF NOT EXISTS signatures (
    key TEXT PRIMARY KEY, params_sha256 TEXT NOT NULL, method TEXT NOT NULL, config_digest TEXT NOT NULL,
    probes_digest TEXT NOT NULL, dtype TEXT NOT NULL, path TEXT NOT NULL, file_sha256 TEXT NOT NULL,
    dead INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, finished REAL, argv TEXT, config TEXT,
    versions TEXT, stats TEXT);
CREATE TABLE IF NOT EXISTS probes (digest TEXT PRIMARY KEY, path TEXT NOT NULL, meta TEXT);
"""

class _Corrupt(Exception):
    """The manifest file is damaged (SignatureCache moves it aside and starts a new one)."""


def signature_key(params_sha256: str, config_digest: str, probes_digest: str, dtype: str = "float32") -> str:
    """The content address of one signature (precision included: bfloat16 rows differ from float32)."""
    return hashlib.sha256("|".join((params_sha256, config_digest, probes_digest, dtype)).encode()).hexdigest()


def _versions() -> dict:
    from importlib.metadata import version

    import flax
    import jax

    return {"jaxprov": __version__, "jax": jax.__version__, "jaxlib": version("jaxlib"),
            "flax": flax.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


class SignatureCache:
    """A directory of stored signatures and probes with its manifest.

    Layout: `manifest.sqlite`, `signatures/<key[:2]>/<key>.npy`, `probes/<digest>.npz`. Paths in
    the manifest are relative to the root, so a store can be moved or copied as a whole.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            from jaxprov.store import os_error_line

            raise StoreError(os_error_line(self.root, err, "cannot create the signature cache",
                                           "choose a writable output directory")) from None
        manifest = self.root / MANIFEST
        if (manifest.exists() or manifest.is_symlink()) and not (manifest.is_file() and not manifest.is_symlink()):
            raise StoreError(f"{manifest}: not a regular file; remove it (the signatures are recomputed) "
                             "or use another store directory")
        try:
            self._open_manifest()
        except _Corrupt as err:
            # The manifest is an index of files that re-hash on every read: a fresh one loses only
            # reuse (every signature is recomputed once); the damaged file is kept for inspection.
            aside = manifest.with_name(f"{MANIFEST}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}")
            manifest.rename(aside)
            warnings.warn(f"{manifest}: corrupt manifest ({err}); moved to {aside.name}, starting a new one "
                          "(stored signatures are recomputed once)", stacklevel=2)
            self._open_manifest()

    def _open_manifest(self) -> None:
        with self._db(corrupt=_Corrupt) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.root / MANIFEST}: written by a newer jaxprov (schema v{version}); "
                                 "upgrade jaxprov or use another store directory")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise _Corrupt("quick_check failed")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _db(self, corrupt: type[Exception] = StoreError) -> Iterator[sqlite3.Connection]:
        """One connection per operation, one transaction per `with` (committed, or rolled back on error).

        A damaged manifest raises `corrupt` (_Corrupt while opening; else a one-line StoreError); a
        locked or unwritable one a StoreError."""
        path = self.root / MANIFEST
        try:
            connection = sqlite3.connect(path, timeout=60)
            with closing(connection) as db, db:
                yield db
        except sqlite3.OperationalError as err:  # locked, read-only, cannot open: not damage
            raise StoreError(f"{path}: cannot use the manifest ({err}); check the folder's permissions "
                             "and that no other process holds it") from None
        except sqlite3.DatabaseError as err:  # "file is not a database", "disk image is malformed", ...
            if corrupt is _Corrupt:
                raise _Corrupt(str(err)) from None
            raise StoreError(f"{path}: corrupt manifest ({err}); delete it (the signatures are recomputed)") from None

    def query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        """Rows of a read-only SQL query on the manifest (for inspection and reports)."""
        with self._db() as db:
            return db.execute(sql, tuple(args)).fetchall()

    # -- models and probes ------------------------------------------------------------------

    def register_models(self, models: Sequence[Model]) -> None:
        """Record each model's identity; the first name seen is kept, provenance fills in when known."""
        rows = []
        for m in models:
            source = m.meta.get("source") or {}
            lineage = m.meta.get("lineage")
            rows.append((model_digest(m), m.name, m.arch, source.get("path"), source.get("sha256"),
                         None if lineage is None else json.dumps(lineage, sort_keys=True, default=str)))
        with self._db() as db:
            db.executemany(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(params_sha256) DO UPDATE SET "
                "source_path = COALESCE(source_path, excluded.source_path), "
                "source_sha256 = COALESCE(source_sha256, excluded.source_sha256), "
                "lineage = COALESCE(lineage, excluded.lineage)", rows)

    def save_probes(self, probes: Probes) -> Path:
        """Store the probes once under their digest (a later run can reload exactly these)."""
        relative = f"probes/{probes.digest}.npz"
        path = self.root / relative
        with self._db() as db:
            known = db.execute("SELECT 1 FROM probes WHERE digest = ?", (probes.digest,)).fetchone()
        if known and path.is_file():
            return path
        probes.save(path)
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO probes VALUES (?, ?, ?)",
                       (probes.digest, relative, json.dumps(probes.meta, sort_keys=True, default=str)))
        return path

    def load_probes(self, digest: str) -> Probes:
        """Stored probes by digest; `Probes.load` re-checks the digest of what it reads."""
        row = self.query("SELECT 1 FROM probes WHERE digest = ?", (digest,))
        if not row:
            raise StoreError(f"{self.root}: no stored probes with digest {digest[:16]}...")
        # The path follows from the digest; the manifest's copy is never trusted (it could point anywhere).
        return Probes.load(self.root / f"probes/{digest}.npz")

    # -- signatures -------------------------------------------------------------------------

    def get(self, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Stored signatures for `keys`, each re-hashed against the manifest.

        Returns (found: key -> vector, dropped: key -> why). Dropped entries (file missing, hash
        mismatch, unreadable) are removed from the manifest and disk, so they count as missing.
        """
        unique = list(dict.fromkeys(keys))
        rows: dict[str, tuple[str, str]] = {}
        with self._db() as db:
            for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
                part = unique[start:start + 500]
                marks = ",".join("?" * len(part))
                for key, _, sha in db.execute(
                        f"SELECT key, path, file_sha256 FROM signatures WHERE key IN ({marks})", part):
                    # Read and delete only where the key says: a tampered manifest's path could
                    # point outside the store.
                    rows[key] = (_signature_path(key), str(sha))
        found, dropped = {}, {}
        for key, (relative, sha) in rows.items():
            file = self.root / relative
            try:
                if not stat.S_ISREG(os.lstat(file).st_mode):
                    dropped[key] = "not a regular file"
                    continue
                data = file.read_bytes()
            except FileNotFoundError:
                dropped[key] = "file missing"
                continue
            except OSError:
                dropped[key] = "unreadable"
                continue
            if hashlib.sha256(data).hexdigest() != sha:
                dropped[key] = "sha256 mismatch"
                continue
            try:
                found[key] = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError:
                dropped[key] = "unreadable"
        if dropped:
            self._drop(dropped, rows)
        return found, dropped

    def _drop(self, dropped: dict[str, str], rows: dict[str, tuple[str, str]]) -> None:
        with self._db() as db:
            db.executemany("DELETE FROM signatures WHERE key = ?", [(k,) for k in dropped])
        for key in dropped:
            try:
                (self.root / rows[key][0]).unlink(missing_ok=True)
            except OSError:  # a folder or an unremovable file: the next put replaces or reports it
                pass

    def put(self, entries: Sequence[tuple[str, np.ndarray, Model]], method: Method, probes_digest: str,
            dtype: str = "float32") -> None:
        """Store (key, signature, model) triples: files first, then their manifest rows in one transaction.

        A crash between the two leaves only an unlisted file, which the next run overwrites.
        """
        rows = []
        for key, vector, model in entries:
            vector = np.ascontiguousarray(vector, np.float32)
            buffer = io.BytesIO()
            np.save(buffer, vector, allow_pickle=False)
            data = buffer.getvalue()
            relative = _signature_path(key)
            atomic_write(self.root / relative, data)
            rows.append((key, model_digest(model), method.name, method.config_digest(), probes_digest, dtype,
                         relative, hashlib.sha256(data).hexdigest(),
                         int(np.linalg.norm(vector) <= DEAD_NORM), time.time()))
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO signatures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, config: dict) -> int:
        with self._db() as db:
            cursor = db.execute("INSERT INTO runs (started, argv, config, versions) VALUES (?, ?, ?, ?)",
                                (time.time(), json.dumps(sys.argv), json.dumps(config, sort_keys=True, default=str),
                                 json.dumps(_versions(), sort_keys=True)))
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, stats: dict) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET finished = ?, stats = ? WHERE id = ?",
                       (time.time(), json.dumps(stats, sort_keys=True), run_id))


# The class's old name, kept for one release ("store" names the converted-model store, jaxprov.store).
SignatureStore = SignatureCache


def _signature_path(key: str) -> str:
    return f"signatures/{key[:2]}/{key}.npy"


def cached_signatures(method: Method, models: Sequence[Model], probes: Probes,
                      cache: SignatureCache | str | os.PathLike, config: EngineConfig = EngineConfig(),
                      progress: Callable[[int], None] | None = None) -> Signatures:
    """`jaxprov.engine.signatures`, computing only what `cache` does not already hold.

    The missing signatures are asked of the engine in one call, which batches them as it always
    does and hands back each chunk of models as it finishes (`on_chunk`); each chunk is stored
    before the next is computed, so an interrupted run loses at most one chunk's work. Models with
    equal weights share one stored signature and are computed once.

    Args:
      method, models, probes, config: as for `jaxprov.engine.signatures`.
      cache: a SignatureCache or its root directory.
      progress: optional callable(n_ready): models (of `models`) whose signature is available, called
        once for those found in the store (if any) and after each computed chunk is stored.

    Returns:
      The Signatures the engine would return, rows in the order of `models`.
    """
    if not models:
        raise ValueError("no models to fingerprint")
    store = cache if isinstance(cache, SignatureCache) else SignatureCache(cache)
    run_id = store.start_run({"method": method.config(), "engine": dataclasses.asdict(config),
                              "probes": probes.digest, "models": [m.name for m in models]})
    store.save_probes(probes)
    store.register_models(models)
    keys = [signature_key(model_digest(m), method.config_digest(), probes.digest, config.dtype) for m in models]
    found, dropped = store.get(keys)
    if dropped:
        noun = "entry" if len(dropped) == 1 else "entries"
        warnings.warn(f"signature cache {store.root}: {len(dropped)} damaged {noun} removed and recomputed "
                      f"({', '.join(sorted(set(dropped.values())))})", stacklevel=2)
    hits = sum(k in found for k in keys)
    if hits and progress is not None:
        progress(hits)

    # One model per missing key (equal weights compute once).
    todo = list({key: model for key, model in zip(keys, models) if key not in found}.items())

    def store_chunk(indices: Sequence[int], vectors: np.ndarray) -> None:
        chunk = [todo[i] for i in indices]
        store.put([(key, vector, model) for (key, model), vector in zip(chunk, vectors)],
                  method, probes.digest, config.dtype)
        found.update((key, vector) for (key, _), vector in zip(chunk, vectors))
        if progress is not None:
            progress(sum(k in found for k in keys))

    if todo:
        engine.signatures(method, [m for _, m in todo], probes, config, on_chunk=store_chunk)
    store.finish_run(run_id, {"models": len(models), "hits": hits, "computed": len(todo),
                              "dropped": dict(dropped)})
    return Signatures.assemble(method, [m.name for m in models], [m.arch for m in models],
                               [found[k] for k in keys], probes.digest)
