"""``m2m bench``: the throughput benchmark (:func:`major2minor.bench.run`), printed as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from major2minor.bench import run


def cmd_bench(args: argparse.Namespace) -> int:
    out = run(
        device=args.device,
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        amp=args.amp,
        compile_model=args.compile,
        channels_last=args.channels_last,
        threads=args.threads,
        methods=tuple(args.methods.split(",")),
        translate_rejected=args.translate_rejected,
        steps=args.steps,
        fold_generator=args.fold_generator,
        fold_classifier=args.fold_classifier,
        flush_denormal=args.flush_denormal,
    )
    print(json.dumps(out, indent=2))
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``bench`` sub-command to the ``m2m`` parser."""
    p = sub.add_parser("bench", help="throughput benchmark (JSON): ERM, DRS and M2m steps, ResNet-32, batch 128")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--amp",
        choices=["auto", "none", "bf16"],
        default="auto",
        help="autocast: auto (the default of train.amp: bf16 where ResNet-32 is measured faster), none, bf16",
    )
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="plain NCHW layout (channels-last is the engine's default)",
    )
    p.add_argument(
        "--no-fold", dest="fold_generator", action="store_false", help="do not fold g's BatchNorm into its convolutions"
    )
    p.add_argument(
        "--no-fold-f",
        dest="fold_classifier",
        action="store_false",
        help="translate through f itself, not a BatchNorm-folded copy of it",
    )
    p.add_argument(
        "--no-flush-denormal",
        dest="flush_denormal",
        action="store_false",
        help="keep subnormal floats (CPU; flushing them to zero is the engine's default)",
    )
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--methods", default="erm,drs,m2m")
    p.add_argument(
        "--translate-rejected",
        action="store_true",
        help="also translate slots the Bernoulli draw rejects (the public code's behaviour)",
    )
    p.add_argument("--steps", type=int, default=10)
    p.set_defaults(func=cmd_bench)
