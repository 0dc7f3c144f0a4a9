#!/usr/bin/env python3
"""The memory-bandwidth peer of rank1's decode bench (bench/model.ts): how fast this machine streams memory
into the cores, measured as PyTorch sums a 1 GiB float32 tensor of random values (a read-only stream, like a
decode step reading every weight once; random, like weights, so that no two pages are alike). On this VM the
figure is mostly 45-48 GB/s, but some runs measure 64-80: the host's bandwidth varies. Best of five, on `--threads` threads. Prints one JSON line:
{"gbPerSecond": ..., "bytes": ..., "torch": version, "threads": n}.
Runs only where Debian's python3-torch is installed; never needed by the test suite.
"""
import argparse
import json
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument('--threads', type=int, default=2)
parser.add_argument('--mib', type=int, default=1024)
args = parser.parse_args()
torch.set_num_threads(args.threads)
x = torch.rand(args.mib * 1024 * 1024 // 4, dtype=torch.float32)
x.sum()  # touch every page first
best = float('inf')
for _ in range(5):
    started = time.perf_counter()
    x.sum().item()
    best = min(best, time.perf_counter() - started)
nbytes = x.numel() * 4
print(json.dumps({'gbPerSecond': nbytes / best / 1e9, 'bytes': nbytes, 'torch': torch.__version__, 'threads': args.threads}))
