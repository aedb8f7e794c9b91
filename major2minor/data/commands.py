"""``m2m data prepare`` and ``m2m data info``.

    m2m data prepare NAME --root DIR [--cache DIR] [--no-verify] [key=value ...]
    m2m data info NAME [--root DIR] [key=value ...] [--manifest FILE] [--json]

``prepare`` gets a data set ready once: for CIFAR it downloads the official archive when the pickles
are missing (the only data sets with a stable public URL), verifies MD5 checksums of the archive
and of every pickle, and unpacks it; for CelebA-5 it regenerates the split lists from
``list_attr_celeba.txt`` when they are missing; for every image data set it decodes the images once
into the decoded-array cache (``--cache`` or ``ROOT/.m2m-cache``).  Data sets without a public URL
(CelebA, SUN397, ImageNet, R52, Twitter POS) must be put in place by hand: the error says where.

``info`` builds the data set as a run would (starting from the built-in recipe of the same name
when there is one, then ``key=value`` overrides; bare keys mean ``data.KEY``) and prints the class
counts, imbalance ratio, split sizes and the manifest a run directory records (long index lists
are summarised; ``--manifest FILE`` writes the full manifest as JSON).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from major2minor.data.io import DataFormatError, download, md5sum, safe_extract

LONG_KEYS = ("indices", "vocabulary", "class_names")


class _IntermixedParser(argparse.ArgumentParser):
    """Lets ``key=value`` overrides come before or after options (``info NAME --root D ratio=50``)."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data prepare`` / ``data info`` to the ``m2m`` sub-command parsers."""
    data = subparsers.add_parser("data", help="prepare data sets (download, verify, decode) and inspect them")
    sub = data.add_subparsers(dest="data_command", required=True, parser_class=_IntermixedParser)

    prep = sub.add_parser("prepare", help="download (CIFAR), verify checksums, decode once into the cache")
    prep.add_argument("name", help="data set name (see `m2m list datasets`)")
    prep.add_argument("--root", required=True, help="folder that holds (or will hold) the data set's files")
    prep.add_argument("--cache", default=None, help="decoded-array cache folder (default: ROOT/.m2m-cache)")
    prep.add_argument("--no-verify", action="store_true", help="skip the MD5 check of existing CIFAR pickles")
    prep.add_argument("items", nargs="*", help="data key=value overrides, e.g. image_size=32")
    prep.set_defaults(func=cmd_prepare)

    info = sub.add_parser("info", help="class counts, imbalance ratio, split sizes and the manifest")
    info.add_argument("name", help="data set name (see `m2m list datasets`)")
    info.add_argument("--root", default=None, help="data.root (default: the recipe's)")
    info.add_argument("--manifest", default=None, help="also write the full manifest JSON to this file")
    info.add_argument("--json", action="store_true", help="print only the manifest JSON")
    info.add_argument("items", nargs="*", help="key=value overrides (bare keys mean data.KEY), e.g. ratio=50")
    info.set_defaults(func=cmd_info)
    return data


# ----------------------------------------------------------------------------------------------

def recipe_for(name: str) -> Optional[str]:
    """The built-in recipe named ``name``, or the first whose ``data.name`` is ``name``."""
    from major2minor.config import RECIPE_DIR, list_recipes
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
    from major2minor.config import Config, DataConfig, load_config, parse_override, set_key, validate
    from major2minor.registry import DATASETS

    DATASETS.get(name)   # unknown name -> error listing the valid ones
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
        lines.append(f"training file before the validation hold-out: {sum(fc)} samples, max {max(fc)}, "
                     f"min {min(fc)}, imbalance ratio {m['file_imbalance_ratio']:.1f}")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from major2minor.data import build_dataset
    cfg = data_config(args.name, args.items, root=args.root)
    bundle = build_dataset(cfg, 0)
    manifest = bundle.manifest()
    if args.manifest:
        Path(args.manifest).parent.mkdir(parents=True, exist_ok=True)
        Path(args.manifest).write_text(json.dumps(manifest, indent=1))
    if args.json:
        print(json.dumps(summary(manifest), indent=1))
        return 0
    print(describe(bundle))
    print("manifest:")
    for key, value in summary(manifest).items():
        print(f"  {key}: {json.dumps(value)}")
    return 0


# ----------------------------------------------------------------------------------------------

def prepare_cifar(name: str, root: Path, verify: bool, say=print) -> None:
    from major2minor.data.datasets.cifar import SPECS
    spec = SPECS[name]
    root.mkdir(parents=True, exist_ok=True)
    folder = root / spec.folder
    files = list(spec.train_files) + list(spec.test_files)
    if not all((folder / f).exists() for f, _ in files):
        archive = download(spec.url, root / spec.archive, spec.archive_md5, progress=say)
        say(f"extracting {archive} into {root}")
        safe_extract(archive, root)
        verify = True
    if verify:
        for f, md5 in files:
            got = md5sum(folder / f)
            if got != md5:
                raise DataFormatError(f"{folder / f}: MD5 {got} does not match the official {md5}; the file is corrupt "
                                      f"or not the official CIFAR pickle. Delete {folder} and run `m2m data prepare "
                                      f"{name} --root {root}` again (or pass --no-verify to use it anyway).")
        say(f"{folder}: {len(files)} pickles, checksums OK")


def prepare_celeba5(root: Path, say=print) -> None:
    from major2minor.data.datasets import celeba
    if celeba.find_lists(root) is not None:
        return
    attr = next((root / a for a in celeba.ATTR_FILES if (root / a).exists()), None)
    if attr is None:
        return          # the build below raises the error that says what is missing
    out = root / "celeba5-splits"
    counts = celeba.regenerate_splits(attr, out)
    say(f"regenerated the CelebA-5 split lists from {attr} into {out} (rule: exactly one hair attribute; per class "
        f"first 50 -> val, next 100 -> test, every 20th of the rest -> train): {counts}")


def cmd_prepare(args: argparse.Namespace) -> int:
    from major2minor.data import build_dataset
    root = Path(args.root).expanduser()
    if args.name in ("cifar10-lt", "cifar100-lt"):
        prepare_cifar(args.name, root, verify=not args.no_verify)
    elif args.name == "celeba5" and root.exists():
        prepare_celeba5(root)
    cfg = data_config(args.name, args.items, root=str(root), cache=args.cache)
    bundle = build_dataset(cfg, 0)        # decodes images into the cache where the data set has one
    print(describe(bundle))
    print(f"{args.name}: ready (data.root={root})")
    return 0
