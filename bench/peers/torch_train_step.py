#!/usr/bin/env python3
"""The PyTorch peer of rank1's training step (bench/model.ts): a Qwen2.5-0.5B-shaped model with frozen
random weights, rank-1 LoRA (rsLoRA alpha 16) on all seven projections of every layer, gradient
checkpointing per layer, one block of tokens: forward, masked cross-entropy, backward, AdamW step.
Prints one JSON line: {"seconds": ..., "tokensPerSecond": ..., "torch": version, "threads": n}.
Runs only where Debian's python3-torch is installed; never needed by the test suite. Install
libopenblas0-pthread too: without it Debian's torch uses the reference BLAS and is ~30x slower, which would
flatter rank1.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

H, I, NH, KV, HD, V = 896, 4864, 14, 2, 64, 151936
THETA, EPS, SCALE = 1e6, 1e-6, 16.0


def lora(x, weight, bias, a, b):
    y = F.linear(x, weight, bias)
    return y + SCALE * (x @ a.T) @ b.T


def rope(x, cos, sin):
    x1, x2 = x[..., : HD // 2], x[..., HD // 2:]
    return x * cos + torch.cat((-x2, x1), -1) * sin


def layer(h, w, adapters, cos, sin, causal):
    B, T, _ = h.shape
    x = w['ln1'] * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS))
    q = lora(x, w['q'], w['qb'], *adapters['q']).view(B, T, NH, HD).transpose(1, 2)
    k = lora(x, w['k'], w['kb'], *adapters['k']).view(B, T, KV, HD).transpose(1, 2)
    v = lora(x, w['v'], w['vb'], *adapters['v']).view(B, T, KV, HD).transpose(1, 2)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    k = k.repeat_interleave(NH // KV, 1)
    v = v.repeat_interleave(NH // KV, 1)
    scores = (q @ k.transpose(-1, -2)) * HD ** -0.5
    attn = torch.softmax(scores.masked_fill(~causal, float('-inf')), -1) @ v
    h = h + lora(attn.transpose(1, 2).reshape(B, T, NH * HD), w['o'], None, *adapters['o'])
    x = w['ln2'] * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS))
    act = F.silu(lora(x, w['gate'], None, *adapters['gate'])) * lora(x, w['up'], None, *adapters['up'])
    return h + lora(act, w['down'], None, *adapters['down'])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--layers', type=int, default=24)
    parser.add_argument('--block', type=int, default=2048)
    args = parser.parse_args()
    # Debian's torch may start with one OpenMP thread; use every core, as rank1 does.
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    r = lambda *shape: (torch.rand(*shape) * 2 - 1) * 0.02  # noqa: E731
    shapes = {'q': (NH * HD, H), 'k': (KV * HD, H), 'v': (KV * HD, H), 'o': (H, NH * HD), 'gate': (I, H), 'up': (I, H), 'down': (H, I)}
    layers, adapters = [], []
    for _ in range(args.layers):
        w = {name: r(*shape) for name, shape in shapes.items()}
        w.update(qb=r(NH * HD), kb=r(KV * HD), vb=r(KV * HD), ln1=torch.ones(H), ln2=torch.ones(H))
        layers.append(w)
        adapters.append({name: (((torch.rand(1, shape[1]) * 2 - 1) / math.sqrt(shape[1])).requires_grad_(),
                                torch.zeros(shape[0], 1).requires_grad_()) for name, shape in shapes.items()})
    embed, norm = r(V, H), torch.ones(H)
    params = [t for layer_adapters in adapters for pair in layer_adapters.values() for t in pair]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=1e-4)

    def step(T):
        ids = torch.randint(0, V, (1, T))
        inv_freq = 1.0 / (THETA ** (torch.arange(0, HD, 2).float() / HD))
        freqs = torch.outer(torch.arange(T).float(), inv_freq)
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos(), emb.sin()
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        h = embed[ids]
        for w, a in zip(layers, adapters):
            h = checkpoint(layer, h, w, a, cos, sin, causal, use_reentrant=False)
        h = norm * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS))
        logits = h @ embed.T
        loss = F.cross_entropy(logits[0, :-1], ids[0, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()

    step(16)  # warm-up
    started = time.perf_counter()
    step(args.block)
    seconds = time.perf_counter() - started
    print(json.dumps({'seconds': seconds, 'tokensPerSecond': args.block / seconds, 'torch': torch.__version__, 'threads': torch.get_num_threads()}))


if __name__ == '__main__':
    main()
