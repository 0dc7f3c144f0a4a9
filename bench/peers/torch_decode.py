#!/usr/bin/env python3
"""The PyTorch peer of rank1's decode (bench/model.ts): a Qwen2.5-0.5B-shaped model with random weights
stored in `--dtype` (bfloat16 by default, every tensor, norms and biases too: what loading with
torch_dtype=bfloat16 gives) and multiplied in it by F.linear, the tied embedding as the LM head, under
torch.inference_mode(). A `--prompt`-token prefill fills a preallocated KV cache ([1, kv heads, prompt +
decode + 1, head dim] per layer, written in place); one decode step warms up; then `--decode` steps are
timed one token at a time, each feeding the previous step's greedy token. Fails if any logits are not finite.
Prints one JSON line: {"msPerToken", "tokensPerSecond", "weightBytesPerToken", "torch", "threads", "dtype"}.
Runs only where Debian's python3-torch is installed; never needed by the test suite.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from torch_train_step import EPS, H, HD, I, KV, NH, THETA, V, rope

DTYPES = {'bfloat16': torch.bfloat16, 'float32': torch.float32}


def rms_norm(h, weight):
    """HF's Qwen2RMSNorm: the statistics in float32, the scale in the weights' dtype."""
    x = h.float()
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)).to(h.dtype)


def attention(q, keys, values, start):
    """q [1, NH, T, HD] at positions start.., keys/values [1, KV, S, HD] (S = start + T): the query heads in
    groups of NH // KV share one kv head, so q is viewed as [1, KV, groups·T, HD] and nothing is repeated."""
    _, _, T, _ = q.shape
    S = keys.shape[2]
    groups = NH // KV
    scores = (q.reshape(1, KV, groups * T, HD) @ keys.transpose(-1, -2)) * HD ** -0.5  # [1, KV, groups·T, S]
    query_position = (start + torch.arange(T)).repeat(groups)  # [groups·T]
    scores = scores.masked_fill(torch.arange(S)[None, :] > query_position[:, None], float('-inf'))
    out = torch.softmax(scores.float(), -1).to(q.dtype) @ values  # [1, KV, groups·T, HD]
    return out.reshape(1, NH, T, HD).transpose(1, 2).reshape(1, T, NH * HD)


def layer(h, w, cache, start, cos, sin):
    """One decoder layer on h [1, T, H] at positions start..start+T-1, writing its keys and values to cache."""
    _, T, _ = h.shape
    x = rms_norm(h, w['ln1'])
    q = F.linear(x, w['q'], w['qb']).view(1, T, NH, HD).transpose(1, 2)
    k = F.linear(x, w['k'], w['kb']).view(1, T, KV, HD).transpose(1, 2)
    v = F.linear(x, w['v'], w['vb']).view(1, T, KV, HD).transpose(1, 2)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    keys, values = cache
    keys[:, :, start:start + T] = k
    values[:, :, start:start + T] = v
    h = h + F.linear(attention(q, keys[:, :, :start + T], values[:, :, :start + T], start), w['o'])
    x = rms_norm(h, w['ln2'])
    return h + F.linear(F.silu(F.linear(x, w['gate'])) * F.linear(x, w['up']), w['down'])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--layers', type=int, default=24)
    parser.add_argument('--prompt', type=int, default=16)
    parser.add_argument('--decode', type=int, default=16)
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='bfloat16')
    args = parser.parse_args()
    if args.layers < 1 or args.prompt < 1 or args.decode < 1:
        sys.exit('torch_decode.py: --layers, --prompt and --decode must each be at least 1')
    dtype = DTYPES[args.dtype]
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)

    def r(*shape, scale=0.02):
        return ((torch.rand(*shape) * 2 - 1) * scale).to(dtype)

    def norm():
        return (1 + r(H, scale=0.05).float()).to(dtype)

    shapes = {'q': (NH * HD, H), 'k': (KV * HD, H), 'v': (KV * HD, H), 'o': (H, NH * HD), 'gate': (I, H), 'up': (I, H), 'down': (H, I)}
    layers = []
    for _ in range(args.layers):
        w = {name: r(*shape) for name, shape in shapes.items()}
        w.update(qb=r(NH * HD), kb=r(KV * HD), vb=r(KV * HD), ln1=norm(), ln2=norm())
        layers.append(w)
    embed, final_norm = r(V, H, scale=0.05), norm()
    # Every weight a step reads: the layers, the final norm and the whole embedding as the LM head (the
    # embedding lookup reads one row, left out), as bench/model.ts counts rank1's.
    weight_bytes = sum(t.numel() * t.element_size() for w in layers for t in w.values())
    weight_bytes += (final_norm.numel() + embed.numel()) * embed.element_size()

    total = args.prompt + 1 + args.decode
    caches = [(torch.zeros(1, KV, total, HD, dtype=dtype), torch.zeros(1, KV, total, HD, dtype=dtype)) for _ in layers]
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HD, 2).float() / HD))
    freqs = torch.outer(torch.arange(total).float(), inv_freq)
    angles = torch.cat((freqs, freqs), -1)
    cos_all, sin_all = angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(ids, start):
        """Last-position logits [V] (float32) for ids [1, T] at positions start.., filling the caches."""
        T = ids.shape[1]
        cos, sin = cos_all[start:start + T], sin_all[start:start + T]
        h = embed[ids]
        for w, cache in zip(layers, caches):
            h = layer(h, w, cache, start, cos, sin)
        logits = F.linear(rms_norm(h[:, -1], final_norm), embed)[0].float()
        if not torch.isfinite(logits).all():
            sys.exit(f'torch_decode.py: non-finite logits at position {start + T - 1}')
        return logits

    with torch.inference_mode():
        prompt = torch.tensor([[(i * 7919) % V for i in range(args.prompt)]])
        token = forward(prompt, 0).argmax().view(1, 1)
        token = forward(token, args.prompt).argmax().view(1, 1)  # warm-up step
        started = time.perf_counter()
        for i in range(args.decode):
            token = forward(token, args.prompt + 1 + i).argmax().view(1, 1)
        seconds = time.perf_counter() - started
    print(json.dumps({
        'msPerToken': seconds * 1000 / args.decode, 'tokensPerSecond': args.decode / seconds, 'weightBytesPerToken': weight_bytes,
        'torch': torch.__version__, 'threads': torch.get_num_threads(), 'dtype': args.dtype,
    }))


if __name__ == '__main__':
    main()
