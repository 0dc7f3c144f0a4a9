#!/usr/bin/env python3
"""The PyTorch peer of `npm run bench`'s cross-entropy over a wide vocabulary: per-row losses
F.cross_entropy(logits, targets, reduction='none') and their gradient with respect to the logits (backward of
their sum, i.e. softmax - onehot per row), on the very logits and targets rank1 gets, timed as the bench times
rank1 (the first call alone, then the mean of calls over a time budget), on every core.
Prints one JSON line: {"torch", "threads", "rows", "vocab", "firstMs", "meanMs", "minMs", "samples", "loss0"}.
Runs only where Debian's python3-torch is installed; never needed by the tests.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument('--rows', type=int, required=True)
parser.add_argument('--vocab', type=int, required=True)
parser.add_argument('--inputs', required=True, help='raw little-endian file: f32 logits [rows, vocab] then i32 targets [rows]')
parser.add_argument('--time-ms', type=float, default=2000)
parser.add_argument('--min-samples', type=int, default=3)
args = parser.parse_args()

torch.set_num_threads(os.cpu_count() or 1)
rows, vocab = args.rows, args.vocab
logits = torch.from_numpy(np.fromfile(args.inputs, dtype=np.float32, count=rows * vocab).reshape(rows, vocab).copy())
targets = torch.from_numpy(np.fromfile(args.inputs, dtype=np.int32, offset=rows * vocab * 4, count=rows).astype(np.int64))
logits.requires_grad_(True)


def forward_backward() -> float:
    logits.grad = None
    loss = F.cross_entropy(logits, targets, reduction='none')
    loss.sum().backward()
    float(logits.grad[0, 0])
    return float(loss[0])


start = time.perf_counter()
loss0 = forward_backward()
first_ms = (time.perf_counter() - start) * 1e3
samples = []
budget_end = time.perf_counter() + args.time_ms / 1e3
while time.perf_counter() < budget_end or len(samples) < args.min_samples:
    start = time.perf_counter()
    forward_backward()
    samples.append((time.perf_counter() - start) * 1e3)
print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), 'rows': rows, 'vocab': vocab,
                  'firstMs': first_ms, 'meanMs': sum(samples) / len(samples), 'minMs': min(samples),
                  'samples': len(samples), 'loss0': loss0}))
