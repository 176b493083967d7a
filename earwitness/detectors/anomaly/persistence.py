"""The anomaly model's state on disk: one .npz per source, written atomically, refused when unusable.

A state that cannot be used (damaged, another version, another feature size) raises StateError;
the detector then moves it aside and learns afresh.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from earwitness.core.files import write_atomically
from earwitness.detectors.anomaly.model import MIN_RING, NormalModel, NormalModelParams

STATE_VERSION = 1


class StateError(Exception):
    """A state file that cannot be used (corrupt, other version, other feature size)."""


def state_dict(model: NormalModel) -> dict[str, Any]:
    meta = {
        "version": STATE_VERSION, "params": asdict(model.p), "dim": model.dim, "n_seen": model.n_seen,
        "clock_s": model.clock_s, "learned_s": model.learned_s,
        "threshold": model.threshold if math.isfinite(model.threshold) else None,
        "ring_pos": model.ring_pos, "last_refit_s": _finite(model.last_refit_s),
        "last_anomaly_s": _finite(model.last_anomaly_s), "episode": model.episode,
        "n_habituated": model.n_habituated, "hop_s": getattr(model, "_hop_s", None),
        "levels_pos": model.levels_pos,
    }
    arrays = {"bank": model.bank, "bank_t": model.bank_t, "ring": model.ring, "q": model.q, "q_t": model.q_t,
              "q_ep": model.q_ep, "levels": model.levels}
    return {"meta": meta, "arrays": arrays}

def save_model(model: NormalModel, path: Path) -> None:
    """Write the state atomically (temporary file, fsync, rename)."""
    write_atomically(serialize(model), path)

def serialize(model: NormalModel) -> bytes:
    """The state as the bytes of an .npz file (a snapshot: later learning does not change it)."""
    state = state_dict(model)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(state["meta"]).encode(), np.uint8), **state["arrays"])
    return buf.getvalue()

def load_model(path: Path, params: NormalModelParams, seed: int = 0) -> NormalModel:
    """Load a saved state; the current `params` apply. Raises StateError if it is unusable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {name: data[name] for name in ("bank", "bank_t", "ring", "q", "q_t", "q_ep", "levels")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise StateError(f"unreadable: {type(error).__name__}: {error}") from None
    if not isinstance(meta, dict) or meta.get("version") != STATE_VERSION:
        raise StateError(f"unknown state version {meta.get('version') if isinstance(meta, dict) else meta!r}")
    model = NormalModel(params, seed)
    try:
        dim = meta["dim"]
        if dim is not None:
            model._init_dim(int(dim))
            bank, q = arrays["bank"].astype(np.float32), arrays["q"].astype(np.float32)
            if bank.ndim != 2 or bank.shape[1] != dim or q.ndim != 2 or q.shape[1] != dim:
                raise StateError("array shapes do not match the feature size")
            if len(arrays["bank_t"]) != len(bank) or len(arrays["q_t"]) != len(q) or len(arrays["q_ep"]) != len(q):
                raise StateError("array lengths do not match")
            if not np.all(np.isfinite(bank)):
                raise StateError("non-finite values in the memory bank")
            n = min(len(bank), params.bank_size)
            model._bank[:n], model._bank_t[:n], model.n_bank = bank[:n], arrays["bank_t"][:n], n
            model._bank_sq[:n] = np.einsum("ij,ij->i", model._bank[:n], model._bank[:n])
            model.q = q
            model.q_t, model.q_ep = arrays["q_t"].astype(np.float64), arrays["q_ep"].astype(np.int64)
        model.ring = arrays["ring"].astype(np.float32)[-params.ring_size:]
        model.ring_pos = int(meta["ring_pos"]) % max(len(model.ring), 1)
        model.n_seen = int(meta["n_seen"])
        model.clock_s = float(meta["clock_s"])
        model.learned_s = float(meta["learned_s"])
        model.threshold = float(meta["threshold"]) if meta["threshold"] is not None else math.inf
        model.last_refit_s = _unfinite(meta["last_refit_s"])
        model.last_anomaly_s = _unfinite(meta["last_anomaly_s"])
        model.episode = int(meta["episode"])
        model.n_habituated = int(meta.get("n_habituated", 0))
        model.levels = arrays["levels"].astype(np.float32)[-params.level_ring_size:]
        model.levels_pos = int(meta.get("levels_pos", 0)) % max(len(model.levels), 1)
        model._levels_sorted = sorted(model.levels.tolist())
        if meta.get("hop_s"):
            model.set_hop(float(meta["hop_s"]))
    except StateError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise StateError(f"bad state: {type(error).__name__}: {error}") from None
    if model.learned_s >= params.learn_s and len(model.ring) >= MIN_RING:
        model.refit()  # the budget may have changed in the config
    return model




def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _unfinite(x: float | None) -> float:
    return -math.inf if x is None else float(x)
