#!/usr/bin/env python3
"""The PyTorch peer of `npm run bench`'s f32 matmul: C = A B for n x n float32 matrices, timed as the bench
times rank1 (the first call alone, then the mean of calls over a time budget), on every core.
Prints one JSON line: {"torch", "threads", "n", "firstMs", "meanMs", "minMs", "samples", "gflops", "c00"} (gflops from
the mean; the minimum says more on a machine that other work shares).
Runs only where Debian's python3-torch is installed (with libopenblas0-pthread); never needed by the tests.
"""
import argparse
import json
import os
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument('--n', type=int, default=1024)
parser.add_argument('--time-ms', type=float, default=2000)
parser.add_argument('--min-samples', type=int, default=3)
parser.add_argument('--inputs', help='raw little-endian f32 file holding A then B (n*n each, row-major), '
                    'so that C[0, 0] can be checked against the same inputs rank1 gets')
args = parser.parse_args()

# Debian's torch may start with one OpenMP thread; use every core, as rank1 does.
torch.set_num_threads(os.cpu_count() or 1)
torch.manual_seed(0)
n = args.n
if args.inputs:
    both = torch.from_file(args.inputs, size=2 * n * n, dtype=torch.float32)
    a = both[:n * n].reshape(n, n).clone()
    b = both[n * n:].reshape(n, n).clone()
else:
    a = torch.rand(n, n) * 2 - 1
    b = torch.rand(n, n) * 2 - 1

start = time.perf_counter()
c = a @ b
first_ms = (time.perf_counter() - start) * 1e3
samples = []
budget_end = time.perf_counter() + args.time_ms / 1e3
while time.perf_counter() < budget_end or len(samples) < args.min_samples:
    start = time.perf_counter()
    c = a @ b
    float(c[0, 0])
    samples.append((time.perf_counter() - start) * 1e3)
mean_ms = sum(samples) / len(samples)
print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), 'n': n, 'firstMs': first_ms,
                  'meanMs': mean_ms, 'minMs': min(samples), 'samples': len(samples), 'gflops': 2 * n ** 3 / (mean_ms * 1e6),
                  'c00': float(c[0, 0])}))
