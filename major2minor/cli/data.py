"""``m2m data prepare`` and ``m2m data info`` (the library side: :mod:`major2minor.data.commands`).

m2m data prepare NAME --root DIR [--cache DIR] [--no-verify] [key=value ...]
m2m data info NAME [--root DIR] [key=value ...] [--manifest FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from major2minor.cli.argparsing import IntermixedParser
from major2minor.data import build_dataset
from major2minor.data.commands import data_config, describe, prepare, summary


def cmd_info(args: argparse.Namespace) -> int:
    """``m2m data info``: build the data set as a run would; print its counts, splits and manifest."""
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


def cmd_prepare(args: argparse.Namespace) -> int:
    """``m2m data prepare``: download / verify / decode once, then describe the data set."""
    root = Path(args.root).expanduser()
    bundle = prepare(args.name, root, args.items, cache=args.cache, verify=not args.no_verify, say=print)
    print(describe(bundle))
    print(f"{args.name}: ready (data.root={root})")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``data prepare`` / ``data info`` to the ``m2m`` sub-command parsers."""
    data = subparsers.add_parser("data", help="prepare data sets (download, verify, decode) and inspect them")
    sub = data.add_subparsers(dest="data_command", required=True, parser_class=IntermixedParser)

    prep = sub.add_parser("prepare", help="download (CIFAR), verify checksums, decode once into the cache")
    prep.add_argument("name", help="data set name (see `m2m list datasets`)")
    prep.add_argument("--root", required=True, help="folder that holds (or will hold) the data set's files")
    prep.add_argument(
        "--cache", default=None, help="decoded-array cache folder (default: $M2M_CACHE, else ~/.cache/major2minor)"
    )
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
