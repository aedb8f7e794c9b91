"""Loading M2m's frozen classifier g: a run directory, a checkpoint, or an official checkpoint.

``m2m.generator=PATH``: PATH is one of our run directories (its ``best.pt``, the best-validation ERM
model, as the public code's g), one of our checkpoints, or an official M2m checkpoint
``{'net': state_dict, ...}``; several paths make M2m-Ensemble.  Without a path, the pipeline
(:mod:`major2minor.pipeline`) trains an ERM g of the same recipe once, caches it, and passes its run
directory here; loading happens when the engine sets up the run, before f trains.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn

from major2minor.checkpoint import CheckpointError, extract_state_dict, load_checkpoint, load_weights
from major2minor.models import build_model


def checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(
            f"m2m.generator={path} is a directory without best.pt or last.pt; "
            "give a finished run directory or a checkpoint file."
        )
    if not path.exists():
        raise CheckpointError(
            f"m2m.generator={path} does not exist; give a run directory, one of our "
            "checkpoints, or an official M2m checkpoint (*.t7 with a 'net' entry)."
        )
    return path


def describe_generator(path: str) -> Dict[str, Any]:
    """Which g a run used, for its summary.json and its seal: the path given, the checkpoint file read, its
    SHA-256 and, for one of our runs, the method and seed it was trained with."""
    file = checkpoint_file(Path(path))
    info: Dict[str, Any] = {
        "path": str(path),
        "file": str(file),
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
    }
    try:
        obj = load_checkpoint(file)
    except CheckpointError:  # loading g itself reports what is wrong with the file, with its own message
        return info
    config = obj.get("config") if isinstance(obj, dict) else None
    if isinstance(config, dict):
        info.update(method=config.get("method"), seed=(config.get("train") or {}).get("seed"))
    return info


def load_generator(path: Path, cfg, bundle, device: torch.device, counts: Sequence[int]) -> nn.Module:
    """Build g with the run's architecture (head inferred from the weights) and load ``path``."""
    file = checkpoint_file(Path(path))
    try:
        obj = load_checkpoint(file)
    except CheckpointError as exc:  # the setting the file came from, for a run that loads several files
        raise CheckpointError(f"m2m.generator={path}: {exc}", reason=exc.reason) from None
    sd = extract_state_dict(obj, file)
    head = "linear" if "linear.bias" in sd else "normed"
    cfg = copy.deepcopy(cfg)
    cfg.model.head = head
    b = bundle
    info = obj if isinstance(obj, dict) else {}
    fix = (
        "give a g trained on this data set with this model (an ERM run of the same recipe), or leave "
        "m2m.generator empty to have one trained and cached."
    )
    if info.get("num_classes") is not None and int(info["num_classes"]) != b.num_classes:
        raise CheckpointError(
            f"m2m.generator={path}: g was trained for {info['num_classes']} classes but this "
            f"run's data ({b.name}) has {b.num_classes}; {fix}"
        )
    if info.get("model_name") and info["model_name"] != cfg.model.name:
        raise CheckpointError(
            f"m2m.generator={path}: g is a '{info['model_name']}' but this run has "
            f"model.name={cfg.model.name} (g is built with the run's architecture); {fix}"
        )
    g = build_model(cfg, b.num_classes, b.input_shape, b.mean, b.std).to(device)
    if cfg.train.channels_last and b.is_image:
        g = g.to(memory_format=torch.channels_last)
    try:
        load_weights(g, file)
    except CheckpointError as exc:
        raise CheckpointError(f"m2m.generator={path}: {exc} {fix}") from exc
    g_counts = obj.get("counts") if isinstance(obj, dict) else None
    if g_counts is not None and list(g_counts) != list(counts):
        warnings.warn(
            f"m2m.generator={path} was trained on class counts {list(g_counts)[:5]}... but this run's "
            f"are {list(counts)[:5]}...; g may not match this data (check data.ratio / data.n_max).",
            stacklevel=2,
        )
    return g


def load_generators(paths: Sequence[str], cfg, bundle, device: torch.device) -> List[nn.Module]:
    """Every g of ``paths`` (one, or several for M2m-Ensemble), built for this run's data and model."""
    return [load_generator(Path(p), cfg, bundle, device, bundle.train_counts) for p in paths]
