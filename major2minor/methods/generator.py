"""Finding M2m's frozen classifier g: a run directory, a checkpoint, an official checkpoint, or a
cached ERM run trained on demand.

* ``m2m.generator=PATH``: PATH is one of our run directories (its ``best.pt``, the best-validation
  ERM model, as the public code's g), one of our checkpoints, or an official M2m checkpoint
  ``{'net': state_dict, ...}``; several paths make M2m-Ensemble.
* no generator: train ERM with the same recipe and data (its own seed, ``train.seed + 1000``) once
  and cache it under ``RUN_ROOT/.generators/<recipe hash>/seed<N>``; later runs reuse it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path
from typing import List, Sequence

import torch
import torch.nn as nn

from major2minor.checkpoint import CheckpointError, extract_state_dict, load_checkpoint, load_weights

GENERATOR_SEED_OFFSET = 1000


def generator_config(cfg):
    """The ERM configuration that produces g for ``cfg``: same data/model/optimiser recipe."""
    g_cfg = copy.deepcopy(cfg)
    g_cfg.method = "erm"
    g_cfg.loss = type(cfg.loss)()            # ce, defaults: loss knobs of f do not shape g
    g_cfg.rebalance = type(cfg.rebalance)()  # none
    g_cfg.model.head = "linear"
    g_cfg.m2m = type(cfg.m2m)()
    g_cfg.train.seed = cfg.train.seed + GENERATOR_SEED_OFFSET
    # g must see f's training split (design section 2): seeded hold-outs (reuters) and
    # data.selection=random draw from the data seed, which stays f's
    g_cfg.data.seed = cfg.train.seed if cfg.data.seed is None else cfg.data.seed
    g_cfg.train.progress = "none"
    key = {k: v for k, v in g_cfg.to_dict().items() if k not in ("run", "recipe")}
    # settings that cannot change an ERM run (or name it) stay out of the cache key
    for volatile in ("device", "threads", "progress", "compile", "channels_last", "seed", "deferred_epoch"):
        key["train"].pop(volatile, None)
    key["data"].pop("workers", None)     # decoding processes: the images do not depend on them
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    g_cfg.run.dir = str(Path(cfg.run.root) / ".generators" / f"{Path(cfg.recipe).stem}-{digest}"
                        / f"seed{g_cfg.train.seed}")
    return g_cfg


def checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"m2m.generator={path} is a directory without best.pt or last.pt; "
                              "give a finished run directory or a checkpoint file.")
    if not path.exists():
        raise CheckpointError(f"m2m.generator={path} does not exist; give a run directory, one of our "
                              "checkpoints, or an official M2m checkpoint (*.t7 with a 'net' entry).")
    return path


def load_generator(path: Path, ctx, counts: Sequence[int]) -> nn.Module:
    """Build g with the run's architecture (head inferred from the weights) and load ``path``."""
    from major2minor.models import build_model
    file = checkpoint_file(Path(path))
    obj = load_checkpoint(file)
    sd = extract_state_dict(obj, file)
    head = "linear" if "linear.bias" in sd else "normed"
    cfg = copy.deepcopy(ctx.cfg)
    cfg.model.head = head
    b = ctx.bundle
    info = obj if isinstance(obj, dict) else {}
    fix = ("give a g trained on this data set with this model (an ERM run of the same recipe), or leave "
           "m2m.generator empty to have one trained and cached.")
    if info.get("num_classes") is not None and int(info["num_classes"]) != b.num_classes:
        raise CheckpointError(f"m2m.generator={path}: g was trained for {info['num_classes']} classes but this "
                              f"run's data ({b.name}) has {b.num_classes}; {fix}")
    if info.get("model_name") and info["model_name"] != cfg.model.name:
        raise CheckpointError(f"m2m.generator={path}: g is a '{info['model_name']}' but this run has "
                              f"model.name={cfg.model.name} (g is built with the run's architecture); {fix}")
    g = build_model(cfg, b.num_classes, b.input_shape, b.mean, b.std).to(ctx.device)
    if cfg.train.channels_last and b.is_image:
        g = g.to(memory_format=torch.channels_last)
    try:
        load_weights(g, file)
    except CheckpointError as exc:
        raise CheckpointError(f"m2m.generator={path}: {exc} {fix}") from exc
    g_counts = obj.get("counts") if isinstance(obj, dict) else None
    if g_counts is not None and list(g_counts) != list(counts):
        warnings.warn(f"m2m.generator={path} was trained on class counts {list(g_counts)[:5]}... but this run's "
                      f"are {list(counts)[:5]}...; g may not match this data (check data.ratio / data.n_max).",
                      stacklevel=2)
    return g


def resolve_generators(ctx, counts: Sequence[int]) -> List[nn.Module]:
    paths = list(ctx.cfg.m2m.generator)
    if not paths:
        paths = [train_cached_generator(ctx)]
    return [load_generator(Path(p), ctx, counts) for p in paths]


def train_cached_generator(ctx) -> Path:
    from major2minor.engine import train
    g_cfg = generator_config(ctx.cfg)
    run_dir = Path(g_cfg.run.dir)
    if (run_dir / "summary.json").exists():
        ctx.log(f"M2m: using cached ERM generator g from {run_dir}")
    else:
        ctx.log(f"M2m: no m2m.generator given; training the ERM generator g first (seed {g_cfg.train.seed}) "
                f"into {run_dir}")
        train(g_cfg, resume=True, log=None, run_dir=run_dir)
    return run_dir
