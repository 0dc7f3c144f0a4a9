#!/usr/bin/env python3
"""The PyTorch peer of rank1's SAE training step (bench/sae.ts): a BatchTopK sparse autoencoder in the
dictionary_learning form at the paper's sizes (d 448 = 7 x 64 adapters of Qwen2.5-32B, 8x latents, k 16,
batch 512): encode, batch top-k over the flattened batch, decode, MSE + 1/32 aux loss on dead latents, backward,
remove the decoder gradient's component along each row, Adam step, renormalise the decoder rows.
Prints one JSON line: {"stepsPerSecond", "tokensPerSecond", "torch", "threads"}.
Runs only where Debian's python3-torch is installed (with libopenblas0-pthread); never needed by the tests.
"""
import argparse
import json
import os
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument('--d', type=int, default=448)
parser.add_argument('--expansion', type=int, default=8)
parser.add_argument('--k', type=int, default=16)
parser.add_argument('--batch', type=int, default=512)
parser.add_argument('--steps', type=int, default=20)
parser.add_argument('--dead', type=int, default=256, help='latents treated as dead (the aux loss runs)')
args = parser.parse_args()

# Debian's torch may start with one OpenMP thread; use every core, as rank1 does.
torch.set_num_threads(os.cpu_count() or 1)
torch.manual_seed(0)
d, F, k, B = args.d, args.d * args.expansion, args.k, args.batch
W_dec = torch.nn.functional.normalize(torch.randn(F, d), dim=1).requires_grad_()
W_enc = W_dec.detach().T.clone().requires_grad_()
b_enc = torch.zeros(F, requires_grad=True)
b_dec = torch.zeros(d, requires_grad=True)
params = [W_enc, b_enc, W_dec, b_dec]
opt = torch.optim.Adam(params, lr=5e-4, betas=(0.9, 0.999))
dead = torch.zeros(F, dtype=torch.bool)
dead[:args.dead] = True
data = torch.randn(args.steps + 2, B, d)


def step(x):
    opt.zero_grad()
    pre = (x - b_dec) @ W_enc + b_enc
    scores = pre * W_dec.norm(dim=1)
    flat = scores.flatten()
    idx = flat.topk(k * B, sorted=False).indices
    mask = torch.zeros_like(flat).scatter_(0, idx, 1.0).view(B, F)
    f = torch.relu(pre) * mask
    x_hat = f @ W_dec + b_dec
    e = x - x_hat
    loss = e.pow(2).sum(-1).mean()
    k_aux = min(d // 2, int(dead.sum()))
    if k_aux > 0:
        dead_scores = torch.where(dead, pre, torch.full_like(pre, -1e30)).detach()
        aux_idx = dead_scores.topk(k_aux, dim=-1).indices
        aux_mask = torch.zeros_like(pre).scatter_(1, aux_idx, 1.0) * dead
        residual = e.detach()
        e_hat = (torch.relu(pre) * aux_mask) @ W_dec
        aux = (residual - e_hat).pow(2).sum(-1).mean() / (residual - residual.mean(0)).pow(2).sum(-1).mean()
        loss = loss + aux / 32
    loss.backward()
    with torch.no_grad():
        W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
    opt.step()
    with torch.no_grad():
        W_dec.div_(W_dec.norm(dim=1, keepdim=True))


for i in range(2):
    step(data[i])
start = time.perf_counter()
for i in range(args.steps):
    step(data[2 + i])
seconds = time.perf_counter() - start
print(json.dumps({'stepsPerSecond': args.steps / seconds, 'tokensPerSecond': args.steps * B / seconds,
                  'torch': torch.__version__, 'threads': torch.get_num_threads()}))
