"""Throughput benchmark: ERM, DRS and M2m steps on CIFAR-LT-10-shaped data, ResNet-32, batch 128.

    python benchmarks/throughput.py [--threads 2] [--channels-last] [--compile] [--amp bf16] [--device cuda]

Same as ``m2m bench``; prints JSON (see major2minor/bench.py for what is measured).
"""

import sys

from major2minor.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
