#!/usr/bin/python3
"""Golden values for rank1's differentiable ops, computed with PyTorch.

Writes test/fixtures/golden-ops.json, read by test/golden-ops.test.ts (which never needs torch).

Run with Debian's python3-torch (1.13):  /usr/bin/python3 scripts/make_golden.py

For every case: the inputs (data, shape, dtype), the forward output, a fixed projection r of the
output's shape, and the gradient of sum(out * r) with respect to every differentiable float input.
Float inputs are drawn, rounded to float32 (the values rank1 stores), and then everything is computed
in float64, so the goldens are the exact answer for the stored inputs, rounded to float32 at the end.
bf16 inputs are stored as their uint16 bit patterns; PyTorch computes with them widened exactly to
float (bf16 is the top half of an f32), as rank1 does.

The PyTorch side is written independently of rank1's kernels: F.* functions where PyTorch has them,
and for RoPE / attention / RMSNorm the Hugging Face Qwen2 formulations (rotate_half with cat(freqs,
freqs), repeat_kv by repeat_interleave, an explicit additive causal mask, Qwen2RMSNorm).

Conventions shared with rank1 that PyTorch leaves open, stated here so the goldens are unambiguous:
  * causal attention with S keys and T queries masks bottom-right aligned (query t sees keys
    s <= t + S - T), the KV-cache convention Hugging Face uses;
  * crossEntropy's mask marks scored rows; masked rows carry target -100 (PyTorch's ignore_index),
    and the loss is the mean over scored rows (F.cross_entropy's reduction='mean' with ignore_index).
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_PATH = os.path.join(ROOT, 'test', 'fixtures', 'golden-ops.json')

GEN = torch.Generator().manual_seed(20251125)


def f32_round(t):
    """float64 tensor holding exactly the float32-rounded values."""
    return t.to(torch.float32).to(torch.float64)


def randn(*shape, scale=1.0):
    return f32_round(torch.randn(tuple(shape), generator=GEN) * scale)


def uniform(*shape, low=-1.0, high=1.0):
    return f32_round(torch.rand(tuple(shape), generator=GEN) * (high - low) + low)


def randint(high, *shape):
    return torch.randint(0, high, shape, generator=GEN)


def bf16_bits(*shape, scale=1.0):
    """(uint16 bit patterns as int64 tensor, exact float64 values) of a random bf16 tensor."""
    b = (torch.randn(*shape, generator=GEN) * scale).to(torch.bfloat16)
    bits = b.view(torch.int16).to(torch.int64) & 0xFFFF
    widened = b.to(torch.float32).to(torch.float64)
    # Cross-check the widening against the bit-level definition (bf16 = top half of an f32).
    as_f32 = (bits.to(torch.int32) << 16).view(torch.float32).to(torch.float64)
    assert torch.equal(as_f32, widened)
    return bits, widened


def num(x):
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f'non-finite golden value {x}')
    return float(f'{x:.9g}')


def floats(t):
    return [num(v) for v in t.detach().reshape(-1).tolist()]


def ints(t):
    return [int(v) for v in t.reshape(-1).tolist()]


CASES = []


class In:
    """One input of a case. kind: 'f32' (float, differentiable unless grad=False), 'i32', 'bf16'."""

    def __init__(self, name, value, kind='f32', grad=True, bits=None):
        self.name = name
        self.kind = kind
        self.grad = grad and kind == 'f32'
        if kind == 'bf16':
            self.bits = bits
            self.value = value  # widened, float64
        elif kind == 'i32':
            self.value = value.to(torch.int64)
        else:
            self.value = value.clone().to(torch.float64)
            # The goldens are exact for the stored inputs only if torch computes on float32 values.
            assert torch.equal(f32_round(self.value), self.value), f'input {name} is not float32-representable'
            if self.grad:
                self.value.requires_grad_(True)

    def to_json(self):
        entry = {'name': self.name, 'dtype': self.kind, 'shape': list(self.value.shape)}
        if self.kind == 'f32':
            entry['grad'] = self.grad
            entry['data'] = floats(self.value)
        elif self.kind == 'i32':
            entry['data'] = ints(self.value)
        else:
            entry['data'] = ints(self.bits)
        return entry


def case(name, op, inputs, fn, attrs=None):
    """Runs fn(*values) in float64 and records output and gradients of sum(out * r)."""
    values = [i.value for i in inputs]
    out = fn(*values)
    r = uniform(*out.shape)
    loss = (out * r).sum()
    diff = [i for i in inputs if i.grad]
    grads = torch.autograd.grad(loss, [i.value for i in diff], allow_unused=True) if diff else []
    grad_json = {}
    for i, g in zip(diff, grads):
        grad_json[i.name] = floats(g if g is not None else torch.zeros_like(i.value))
    CASES.append({
        'name': name,
        'op': op,
        'attrs': attrs or {},
        'inputs': [i.to_json() for i in inputs],
        'out': {'shape': list(out.shape), 'data': floats(out)},
        'r': floats(r),
        'grads': grad_json,
    })


# ---- elementwise and broadcasting ----------------------------------------------------------------

case('add broadcast [3,1,5]+[4,5]', 'add', [In('a', randn(3, 1, 5)), In('b', randn(4, 5))], lambda a, b: a + b)
case('add same shape [7]', 'add', [In('a', randn(7)), In('b', randn(7))], lambda a, b: a + b)
case('sub broadcast [2,3]-[3]', 'sub', [In('a', randn(2, 3)), In('b', randn(3))], lambda a, b: a - b)
case('sub broadcast [1]-[3,2]', 'sub', [In('a', randn(1)), In('b', randn(3, 2))], lambda a, b: a - b)
case('mul broadcast [2,3,5]*[3,1]', 'mul', [In('a', randn(2, 3, 5)), In('b', randn(3, 1))], lambda a, b: a * b)
case('mul broadcast [5,1]*[1,6]', 'mul', [In('a', randn(5, 1)), In('b', randn(1, 6))], lambda a, b: a * b)
case('div broadcast [4,5]/[2,1,5]', 'div', [In('a', randn(4, 5)), In('b', uniform(2, 1, 5, low=0.5, high=2.0))],
     lambda a, b: a / b)
case('div broadcast [3,1]/[3,7] (negative divisors)', 'div',
     [In('a', randn(3, 1)), In('b', uniform(3, 7, low=0.5, high=2.0) * torch.where(randn(3, 7) > 0, 1.0, -1.0))],
     lambda a, b: a / b)
case('add scalar', 'addScalar', [In('a', randn(3, 4))], lambda a: a + 0.75, {'scalar': 0.75})
case('mul scalar', 'mulScalar', [In('a', randn(3, 4))], lambda a: a * -1.5, {'scalar': -1.5})
case('div scalar', 'divScalar', [In('a', randn(5))], lambda a: a / 3.0, {'scalar': 3.0})
case('neg', 'neg', [In('a', randn(2, 3))], lambda a: -a)
case('exp', 'exp', [In('a', randn(3, 5))], torch.exp)
case('log', 'log', [In('a', uniform(3, 5, low=0.2, high=3.0))], torch.log)
case('sqrt', 'sqrt', [In('a', uniform(11, low=0.2, high=3.0))], torch.sqrt)
case('rsqrt', 'rsqrt', [In('a', uniform(2, 6, low=0.2, high=3.0))], torch.rsqrt)
case('square', 'square', [In('a', randn(9))], torch.square)
case('pow 3', 'pow', [In('a', randn(2, 5))], lambda a: a ** 3, {'exponent': 3})
case('pow 2.5 positive', 'pow', [In('a', uniform(7, low=0.2, high=2.0))], lambda a: a ** 2.5, {'exponent': 2.5})
case('pow -1 positive', 'pow', [In('a', uniform(6, low=0.5, high=2.0))], lambda a: a ** -1, {'exponent': -1})
case('abs (no zeros)', 'abs', [In('a', randn(3, 3))], torch.abs)
case('abs of a 0-d tensor', 'abs', [In('a', torch.tensor(-1.75))], torch.abs)
case('mul 0-d * [4]', 'mul', [In('a', torch.tensor(0.625)), In('b', randn(4))], lambda a, b: a * b)
case('sigmoid', 'sigmoid', [In('a', randn(3, 7, scale=3.0))], torch.sigmoid)
case('silu', 'silu', [In('a', randn(2, 7, scale=3.0))], F.silu)
case('silu [1,1,13]', 'silu', [In('a', randn(1, 1, 13, scale=3.0))], F.silu)

# ---- reductions ------------------------------------------------------------------------------------

case('sum axis 1 of [3,5,7]', 'sum', [In('a', randn(3, 5, 7))], lambda a: a.sum(1), {'axes': 1, 'keepDims': False})
case('sum axes [0,2] keepDims', 'sum', [In('a', randn(3, 5, 7))], lambda a: a.sum((0, 2), keepdim=True),
     {'axes': [0, 2], 'keepDims': True})
case('sum all', 'sum', [In('a', randn(4, 3))], lambda a: a.sum(), {})
case('sum axis -1 of [1,9]', 'sum', [In('a', randn(1, 9))], lambda a: a.sum(-1), {'axes': -1, 'keepDims': False})
case('mean axis -1', 'mean', [In('a', randn(3, 5, 7))], lambda a: a.mean(-1), {'axes': -1, 'keepDims': False})
case('mean axes [0,2]', 'mean', [In('a', randn(3, 5, 7))], lambda a: a.mean((0, 2)), {'axes': [0, 2], 'keepDims': False})
case('mean all', 'mean', [In('a', randn(2, 3, 3))], lambda a: a.mean(), {})
case('max axis 1 of [3,5,7]', 'max', [In('a', randn(3, 5, 7))], lambda a: torch.amax(a, 1), {'axes': 1, 'keepDims': False})
case('max axes [0,2] keepDims', 'max', [In('a', randn(3, 5, 7))], lambda a: torch.amax(a, (0, 2), keepdim=True),
     {'axes': [0, 2], 'keepDims': True})
case('max all', 'max', [In('a', randn(4, 6))], lambda a: torch.amax(a), {})
# torch.amax splits the gradient evenly between tied maxima.
case('max axis -1 with ties', 'max',
     [In('a', torch.tensor([[1.0, 3.0, 3.0, -2.0], [2.0, 2.0, 2.0, 0.5], [-1.0, -4.0, -1.5, -3.0]]))],
     lambda a: torch.amax(a, -1), {'axes': -1, 'keepDims': False})

# ---- matmul and linear -----------------------------------------------------------------------------


def mm(a, b, trans_a, trans_b):
    return torch.matmul(a.transpose(-1, -2) if trans_a else a, b.transpose(-1, -2) if trans_b else b)


for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
    m, k, n = 5, 3, 7
    a = randn(k, m) if ta else randn(m, k)
    b = randn(n, k) if tb else randn(k, n)
    case(f'matmul 5x3x7 transA={ta} transB={tb}', 'matmul', [In('a', a), In('b', b)],
         lambda a, b, ta=ta, tb=tb: mm(a, b, ta, tb), {'transA': ta, 'transB': tb})
case('matmul T=1 [1,9]@[9,1]', 'matmul', [In('a', randn(1, 9)), In('b', randn(9, 1))], lambda a, b: a @ b, {})
case('matmul batch broadcast [2,1,4,3]@[3,3,5]', 'matmul', [In('a', randn(2, 1, 4, 3)), In('b', randn(3, 3, 5))],
     lambda a, b: a @ b, {})
case('matmul batch broadcast transB [3,4,6]@[5,6]^T', 'matmul', [In('a', randn(3, 4, 6)), In('b', randn(5, 6))],
     lambda a, b: mm(a, b, False, True), {'transB': True})
case('matmul batch broadcast transA [1,6,4]^T@[2,6,3]', 'matmul', [In('a', randn(1, 6, 4)), In('b', randn(2, 6, 3))],
     lambda a, b: mm(a, b, True, False), {'transA': True})
case('matmul batched transA transB [2,3,7,5]', 'matmul', [In('a', randn(2, 3, 7, 5)), In('b', randn(2, 3, 6, 7))],
     lambda a, b: mm(a, b, True, True), {'transA': True, 'transB': True})
# a is given [k, m]; rank1 multiplies a transposed *view* of it (no transA flag): the layout path.
case('matmul of a transposed view', 'matmulTransposedView', [In('a', randn(6, 4)), In('b', randn(6, 5))],
     lambda a, b: a.transpose(0, 1) @ b, {})
case('linear with bias [2,3,6]x[5,6]', 'linear', [In('x', randn(2, 3, 6)), In('weight', randn(5, 6)), In('bias', randn(5))],
     lambda x, w, b: F.linear(x, w, b), {})
case('linear no bias [1,7]x[3,7]', 'linear', [In('x', randn(1, 7)), In('weight', randn(3, 7))],
     lambda x, w: F.linear(x, w), {})

# ---- bf16 weights (PyTorch computes with the weight widened to float) --------------------------------

bits, w = bf16_bits(6, 5)
case('matmul f32 x bf16 [4,6]@[6,5]', 'matmul', [In('a', randn(4, 6)), In('b', w, 'bf16', bits=bits)],
     lambda a, b: a @ b, {})
bits, w = bf16_bits(5, 6)
case('matmul f32 x bf16 transB [2,3,6]@[5,6]^T', 'matmul', [In('a', randn(2, 3, 6)), In('b', w, 'bf16', bits=bits)],
     lambda a, b: mm(a, b, False, True), {'transB': True})
bits, w = bf16_bits(7, 9, scale=0.3)
case('linear bf16 weight + f32 bias [1,3,9]x[7,9]', 'linear',
     [In('x', randn(1, 3, 9)), In('weight', w, 'bf16', bits=bits), In('bias', randn(7))],
     lambda x, w, b: F.linear(x, w, b), {})
bits, w = bf16_bits(13, 6)
case('embedding bf16 table [13,6]', 'embedding',
     [In('table', w, 'bf16', bits=bits), In('ids', torch.tensor([[0, 12, 5, 5], [7, 1, 12, 3]]), 'i32')],
     lambda t, ids: F.embedding(ids, t), {})

# ---- softmax ----------------------------------------------------------------------------------------

case('softmax [3,7]', 'softmax', [In('a', randn(3, 7, scale=3.0))], lambda a: F.softmax(a, -1), {'axis': -1})
case('softmax axis 1 of [2,5,3]', 'softmax', [In('a', randn(2, 5, 3, scale=3.0))], lambda a: F.softmax(a, 1), {'axis': 1})
# Logits near 100 overflow exp in float32 unless the row max is subtracted. (Their spread is kept at ~3:
# with a spread of ~30 the softmax is nearly one-hot and its gradient, tiny after cancelling terms of ~1,
# is ill-conditioned in float32 itself: PyTorch's own float32 gradient then differs from its float64 one
# by 1e-4 to 1e-1 relative, so such a case would test float32 rounding, not the op.)
case('softmax large logits [2,9]', 'softmax', [In('a', f32_round(randn(2, 9, scale=3.0) + 100.0))], lambda a: F.softmax(a, -1),
     {'axis': -1})
case('log_softmax [4,6]', 'logSoftmax', [In('a', randn(4, 6, scale=3.0))], lambda a: F.log_softmax(a, -1), {'axis': -1})
case('log_softmax axis 0 of [5,3]', 'logSoftmax', [In('a', randn(5, 3, scale=3.0))], lambda a: F.log_softmax(a, 0),
     {'axis': 0})
case('log_softmax [1,1,11]', 'logSoftmax', [In('a', randn(1, 1, 11, scale=3.0))], lambda a: F.log_softmax(a, -1),
     {'axis': -1})

# ---- embedding (f32 table: gradient is a scatter-add, repeated ids accumulate) -----------------------

case('embedding [11,6] ids [2,5] with repeats', 'embedding',
     [In('table', randn(11, 6)), In('ids', torch.tensor([[3, 0, 10, 3, 3], [7, 7, 1, 0, 9]]), 'i32')],
     lambda t, ids: F.embedding(ids, t), {})
case('embedding T=1', 'embedding', [In('table', randn(5, 4)), In('ids', torch.tensor([[4]]), 'i32')],
     lambda t, ids: F.embedding(ids, t), {})

# ---- RMSNorm (Hugging Face Qwen2RMSNorm) -------------------------------------------------------------


def qwen2_rmsnorm(x, w, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(variance + eps))


case('rmsNorm [2,3,10] eps 1e-6', 'rmsNorm', [In('x', randn(2, 3, 10)), In('weight', randn(10))],
     lambda x, w: qwen2_rmsnorm(x, w, 1e-6), {'eps': 1e-6})
case('rmsNorm [1,1,64] eps 1e-5 small x', 'rmsNorm', [In('x', randn(1, 1, 64, scale=0.01)), In('weight', randn(64))],
     lambda x, w: qwen2_rmsnorm(x, w, 1e-5), {'eps': 1e-5})
case('rmsNorm [3,7] eps 1e-6', 'rmsNorm', [In('x', randn(3, 7, scale=4.0)), In('weight', uniform(7, low=0.5, high=1.5))],
     lambda x, w: qwen2_rmsnorm(x, w, 1e-6), {'eps': 1e-6})

# ---- RoPE (Hugging Face rotate_half; rank1 takes the cos/sin [T, hd/2] half tables) -------------------


def rope_tables(positions, head_dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(positions.to(torch.float64), inv_freq)  # [T, hd/2]
    return f32_round(freqs.cos()), f32_round(freqs.sin())


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_rope(x, cos_half, sin_half):
    # HF: q [B, nh, T, hd], cos/sin = cat(freqs, freqs).cos() [T, hd] broadcast over batch and heads.
    q = x.transpose(1, 2)
    cos = torch.cat((cos_half, cos_half), dim=-1)[None, None]
    sin = torch.cat((sin_half, sin_half), dim=-1)[None, None]
    return (q * cos + rotate_half(q) * sin).transpose(1, 2)


for (b, t, nh, hd, start, theta) in [(2, 5, 3, 8, 0, 10000.0), (1, 1, 2, 64, 17, 1000000.0), (1, 3, 1, 128, 4, 10000.0)]:
    cos, sin = rope_tables(torch.arange(start, start + t), hd, theta)
    case(f'rope B={b} T={t} nh={nh} hd={hd} positions {start}..{start + t - 1}', 'rope',
         [In('x', randn(b, t, nh, hd)), In('cos', cos, grad=False), In('sin', sin, grad=False)], hf_rope, {})

# ---- attention (SDPA math written out: repeat_interleave for GQA, additive causal mask) ---------------


def ref_attention(q, k, v, causal, scale=None):
    # q [B, T, nh, hd], k/v [B, S, kv, hd]
    nh, kv, hd = q.shape[2], k.shape[2], q.shape[3]
    t, s = q.shape[1], k.shape[1]
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(nh // kv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(nh // kv, dim=1)
    scale = hd ** -0.5 if scale is None else scale
    scores = qh @ kh.transpose(-1, -2) * scale  # [B, nh, T, S]
    if causal:
        rows = torch.arange(t)[:, None]
        cols = torch.arange(s)[None, :]
        allowed = cols <= rows + (s - t)
        scores = scores + torch.where(allowed, 0.0, float('-inf'))
    return (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2)


ATTENTION = [
    # (B, T, S, nh, kv, hd, causal)
    (1, 5, 5, 2, 2, 64, True),  # GQA ratio 1
    (1, 3, 7, 4, 2, 128, True),  # ratio 2 (2 kv heads, so the head mapping matters), 3 queries over 7 keys
    (2, 2, 3, 2, 1, 64, True),  # ratio 2, B = 2
    (1, 2, 5, 14, 2, 64, True),  # ratio 7 with 2 kv heads
    (1, 1, 4, 7, 1, 64, True),  # ratio 7, single decode step
    (1, 9, 9, 7, 1, 64, True),  # ratio 7, T = 9
    (1, 2, 6, 7, 1, 128, True),  # ratio 7, hd 128
    (1, 1, 1, 2, 1, 64, True),  # T = S = 1
    (2, 4, 6, 2, 1, 64, False),  # no mask
]
for (b, t, s, nh, kv, hd, causal) in ATTENTION:
    case(f'attention B={b} T={t} S={s} nh={nh} kv={kv} hd={hd} causal={causal}', 'attention',
         [In('q', randn(b, t, nh, hd)), In('k', randn(b, s, kv, hd)), In('v', randn(b, s, kv, hd))],
         lambda q, k, v, causal=causal: ref_attention(q, k, v, causal), {'causal': causal})
case('attention custom scale 0.3 B=1 T=3 S=3 nh=2 kv=1 hd=64', 'attention',
     [In('q', randn(1, 3, 2, 64)), In('k', randn(1, 3, 1, 64)), In('v', randn(1, 3, 1, 64))],
     lambda q, k, v: ref_attention(q, k, v, True, 0.3), {'causal': True, 'scale': 0.3})

# ---- swiglu -----------------------------------------------------------------------------------------

case('swiglu [3,11]', 'swiglu', [In('gate', randn(3, 11, scale=3.0)), In('up', randn(3, 11))], lambda g, u: F.silu(g) * u)
case('swiglu [1,1,13]', 'swiglu', [In('gate', randn(1, 1, 13, scale=3.0)), In('up', randn(1, 1, 13))],
     lambda g, u: F.silu(g) * u)

# ---- cross-entropy ---------------------------------------------------------------------------------


def masked_targets(targets, mask):
    return torch.where(mask > 0, targets, torch.full_like(targets, -100))


mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
targets = masked_targets(randint(11, 2, 5), mask)
case('crossEntropy masked mean [2,5,11]', 'crossEntropy',
     [In('logits', randn(2, 5, 11, scale=2.0)), In('targets', targets, 'i32'), In('mask', mask, grad=False)],
     lambda lg, tg, m: F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), ignore_index=-100, reduction='mean'),
     {})
case('crossEntropy unmasked mean [6,9]', 'crossEntropy',
     [In('logits', randn(6, 9, scale=2.0)), In('targets', randint(9, 6), 'i32')],
     lambda lg, tg: F.cross_entropy(lg, tg, reduction='mean'), {})
case('crossEntropy T=1 [1,1,7]', 'crossEntropy',
     [In('logits', randn(1, 1, 7, scale=2.0)), In('targets', torch.tensor([[6]]), 'i32'),
      In('mask', torch.tensor([[1.0]]), grad=False)],
     lambda lg, tg, m: F.cross_entropy(lg.reshape(-1, 7), tg.reshape(-1), ignore_index=-100), {})
mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
targets = masked_targets(randint(8, 4), mask)
case('crossEntropyRows masked [4,8]', 'crossEntropyRows',
     [In('logits', randn(4, 8, scale=2.0)), In('targets', targets, 'i32'), In('mask', mask, grad=False)],
     lambda lg, tg, m: F.cross_entropy(lg, tg, ignore_index=-100, reduction='none') * m, {})

# ---- KL divergence per row: KL(softmax(p) || softmax(q)) -----------------------------------------------


def kl_rows(p, q):
    # F.kl_div(input, target) = target * (log target - input): input = log Q, target = log P (log_target).
    return F.kl_div(F.log_softmax(q, -1), F.log_softmax(p, -1), reduction='none', log_target=True).sum(-1)


case('klDivRows [3,4,9]', 'klDivRows', [In('p', randn(3, 4, 9, scale=2.0)), In('q', randn(3, 4, 9, scale=2.0))], kl_rows)
same = randn(1, 5)
case('klDivRows [1,5] p == q', 'klDivRows', [In('p', same), In('q', same)], kl_rows)

# ---- small composite blocks: a tensor feeding several ops (gradient accumulation across the graph) -----


def mlp_block(x, norm_w, wg, wu, wd):
    h = qwen2_rmsnorm(x, norm_w, 1e-6)
    return x + F.linear(F.silu(F.linear(h, wg)) * F.linear(h, wu), wd)


case('qwen2 MLP block (rmsNorm, linear, swiglu, residual)', 'mlpBlock',
     [In('x', randn(1, 3, 8)), In('norm_w', uniform(8, low=0.5, high=1.5)), In('wg', randn(12, 8, scale=0.3)),
      In('wu', randn(12, 8, scale=0.3)), In('wd', randn(8, 12, scale=0.3))], mlp_block, {'eps': 1e-6})


def attention_block(x, wq, bq, wk, bk, wv, bv, wo, cos, sin, nh=4, kv=2):
    b, t, hidden = x.shape
    hd = hidden // nh
    q = F.linear(x, wq, bq).reshape(b, t, nh, hd)
    k = F.linear(x, wk, bk).reshape(b, t, kv, hd)
    v = F.linear(x, wv, bv).reshape(b, t, kv, hd)
    q, k = hf_rope(q, cos, sin), hf_rope(k, cos, sin)
    return F.linear(ref_attention(q, k, v, True).reshape(b, t, hidden), wo)


cos, sin = rope_tables(torch.arange(0, 5), 8, 10000.0)
case('qwen2 attention block (q/k/v bias, rope, GQA 4/2, o_proj)', 'attentionBlock',
     [In('x', randn(1, 5, 32)), In('wq', randn(32, 32, scale=0.2)), In('bq', randn(32, scale=0.1)),
      In('wk', randn(16, 32, scale=0.2)), In('bk', randn(16, scale=0.1)), In('wv', randn(16, 32, scale=0.2)),
      In('bv', randn(16, scale=0.1)), In('wo', randn(32, 32, scale=0.2)), In('cos', cos, grad=False),
      In('sin', sin, grad=False)],
     attention_block, {'heads': 4, 'kvHeads': 2})

# ---- AdamW: 3 steps of torch.optim.AdamW on fixed params and gradients ---------------------------------

ADAMW_OPTIONS = {'lr': 1e-3, 'beta1': 0.9, 'beta2': 0.95, 'eps': 1e-8, 'weightDecay': 1e-4}


def adamw_golden():
    shape = (3, 5)
    param = torch.nn.Parameter(randn(*shape))
    initial = param.detach().clone()
    opt = torch.optim.AdamW([param], lr=ADAMW_OPTIONS['lr'], betas=(ADAMW_OPTIONS['beta1'], ADAMW_OPTIONS['beta2']),
                            eps=ADAMW_OPTIONS['eps'], weight_decay=ADAMW_OPTIONS['weightDecay'])
    grads, params = [], []
    for step in range(3):
        # Step 2 uses tiny gradients, so eps and the bias corrections matter.
        g = randn(*shape, scale=1e-6 if step == 1 else 1.0)
        param.grad = g.clone()
        opt.step()
        grads.append(floats(g))
        params.append(floats(param.detach()))
    return {'options': ADAMW_OPTIONS, 'shape': list(shape), 'initial': floats(initial), 'grads': grads, 'params': params}


def main():
    adamw = adamw_golden()
    doc = {
        'description': 'rank1 op goldens from PyTorch (float64 math on float32-rounded inputs); '
                       'generated by scripts/make_golden.py, checked by test/golden-ops.test.ts',
        'torch': torch.__version__,
        'cases': CASES,
        'adamw': adamw,
    }
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    text = json.dumps(doc, separators=(',', ':'))
    with open(OUT_PATH, 'w') as f:
        f.write(text + '\n')
    print(f'wrote {len(CASES)} cases + adamw to {os.path.relpath(OUT_PATH, ROOT)} ({len(text) / 1024:.0f} KiB)',
          file=sys.stderr)


if __name__ == '__main__':
    main()
