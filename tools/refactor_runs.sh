#!/usr/bin/env bash
# The 18 runs a refactor must leave bit-identical: the digits demo (ERM, DRS, M2m x seeds 0-2, with their three
# cached g's) and Reuters and Twitter DRS and M2m seed 0 with their g's (the tuned knobs of docs/reproduction.md).
#
#   tools/refactor_runs.sh VENV_BIN OUT [DATA]     # DATA: folder with reuters-r52/ and twitter-pos/ (default ../shared/data)
#   python tools/compare_runs.py BEFORE_OUT AFTER_OUT
#
# Run it once from a checkout of the code before the change and once after, into two OUT folders.
set -euo pipefail
M=$1/m2m
OUT=$2
D=${3:-../shared/data}
mkdir -p "$OUT"
common=(train.threads=1 train.progress=none)
"$M" demo --root "$OUT/demo"
"$M" train reuters method=drs run.root="$OUT/paper" data.root="$D/reuters-r52" "${common[@]}"
"$M" train reuters method=m2m run.root="$OUT/paper" data.root="$D/reuters-r52" "${common[@]}" \
    m2m.beta=0.99 m2m.lam=0.5 m2m.gamma=0.9 m2m.step_size=5.0 m2m.steps=10
"$M" train twitter-pos method=drs run.root="$OUT/paper" data.root="$D/twitter-pos" "${common[@]}"
"$M" train twitter-pos method=m2m run.root="$OUT/paper" data.root="$D/twitter-pos" "${common[@]}" \
    m2m.beta=0.999 m2m.lam=0.5 m2m.gamma=0.9 m2m.step_size=0.1 m2m.steps=10
