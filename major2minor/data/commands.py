"""What ``m2m data prepare`` and ``m2m data info`` do (their command line: :mod:`major2minor.cli.data`).

    m2m data prepare NAME --root DIR [--cache DIR] [--no-verify] [key=value ...]
    m2m data info NAME [--root DIR] [key=value ...] [--manifest FILE] [--json]

``prepare`` (:func:`prepare`) gets a data set ready once: for CIFAR it downloads the official archive
when the pickles are missing (the only data sets with a stable public URL), verifies MD5 checksums of the archive
and of every pickle, and unpacks it; for CelebA-5 it regenerates the split lists from
``list_attr_celeba.txt`` when they are missing; for every image data set it decodes the images once
into the decoded-array cache (``--cache``, else ``$M2M_CACHE``, else ``~/.cache/major2minor``).
Data sets without a public URL (CelebA, SUN397, ImageNet, R52, Twitter POS) must be put in place by
hand: the error says where.  Each data set owns its first-time step (the ``prepare`` metadata of its
registration), so this command names none.

``info`` builds the data set as a run would (:func:`data_config`: starting from the built-in recipe of
the same name when there is one, then ``key=value`` overrides; bare keys mean ``data.KEY``) and prints the class
counts, imbalance ratio, split sizes and the manifest a run directory records (long index lists
are summarised; ``--manifest FILE`` writes the full manifest as JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import yaml

from major2minor.config import (
    RECIPE_DIR,
    Config,
    DataConfig,
    list_recipes,
    load_config,
    parse_override,
    set_key,
    validate,
)
from major2minor.data import build_dataset
from major2minor.registry import DATASETS

LONG_KEYS = ("indices", "vocabulary", "class_names")


# ----------------------------------------------------------------------------------------------


def recipe_for(name: str) -> Optional[str]:
    """The built-in recipe named ``name``, or the first whose ``data.name`` is ``name``."""

    recipes = list_recipes()
    if name in recipes:
        with open(RECIPE_DIR / f"{name}.yaml") as fh:
            if ((yaml.safe_load(fh) or {}).get("data") or {}).get("name", name) == name:
                return name
    for r in recipes:
        with open(RECIPE_DIR / f"{r}.yaml") as fh:
            if ((yaml.safe_load(fh) or {}).get("data") or {}).get("name") == name:
                return r
    return None


def data_config(name: str, items: List[str], root: Optional[str] = None, cache: Optional[str] = None):
    """The DataConfig ``m2m data`` works on: recipe defaults (if any), then overrides, then --root/--cache."""

    DATASETS.get(name)  # unknown name -> error listing the valid ones
    fields = set(DataConfig.__dataclass_fields__)
    overrides = []
    for item in items:
        key, value = parse_override(item)
        if "." not in key and key in fields:
            key = f"data.{key}"
        overrides.append((key, value))
    if root is not None:
        overrides.append(("data.root", root))
    if cache is not None:
        overrides.append(("data.cache", cache))
    recipe = recipe_for(name)
    cfg = load_config(recipe) if recipe is not None else Config()
    cfg.data = cfg.data if recipe is not None else DataConfig(name=name)
    for k, v in overrides:
        set_key(cfg, k, v)
    validate(cfg)
    cfg.data.name = name
    return cfg.data


def summary(manifest: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in manifest.items():
        if k == "indices" and isinstance(v, dict):
            out[k] = {s: f"<{len(ix)} indices>" for s, ix in v.items()}
        elif k in LONG_KEYS and isinstance(v, list) and len(v) > 12:
            out[k] = v[:10] + [f"... {len(v) - 10} more"]
        else:
            out[k] = v
    return out


def describe(bundle) -> str:
    m = bundle.manifest()
    counts = m["train_counts"]
    lines = [
        f"{m['name']}: {m['num_classes']} classes, input {tuple(m['input_shape'])}, bounds {m['bounds']}",
        f"splits: train {m['sizes']['train']}, val {m['sizes']['val']}, test {m['sizes']['test']}",
        f"train counts: max {max(counts)}, min {min(counts)}, imbalance ratio {m['imbalance_ratio']:.1f}",
        f"  {counts}",
    ]
    if "file_train_counts" in m:
        fc = m["file_train_counts"]
        lines.append(
            f"training file before the validation hold-out: {sum(fc)} samples, max {max(fc)}, "
            f"min {min(fc)}, imbalance ratio {m['file_imbalance_ratio']:.1f}"
        )
    return "\n".join(lines)


def prepare(
    name: str,
    root: Union[str, Path],
    items: Sequence[str] = (),
    cache: Optional[str] = None,
    verify: bool = True,
    say: Callable[[str], None] = print,
):
    """Get data set ``name`` ready under ``root`` once; returns its DataBundle (``m2m data prepare``).

    Runs the data set's own first-time step when it has one (the ``prepare`` metadata of its registration:
    CIFAR's download and MD5 check, unless ``verify`` is False; CelebA-5's split lists), then builds it as a
    run would, which decodes the images into the decoded-array cache where the data set has one."""
    root = Path(root).expanduser()
    first_time = DATASETS.entry(name).info.prepare  # a data set's own first-time step, if any
    if first_time is not None:
        first_time(root, verify=verify, say=say)
    cfg = data_config(name, list(items), root=str(root), cache=cache)
    return build_dataset(cfg, 0)
