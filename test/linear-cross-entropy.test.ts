// The chunked losses (src/tensor/linear-cross-entropy.ts) against the unchunked ops they replace, on the CPU
// and on WebGPU: loss and gradients over random shapes, chunk sizes, masks, ignored (-100) targets, tied and
// untied heads (a tied head trains through both the embedding and the loss), a frozen bf16 head; the
// per-row CE and the broadcast KL; and the memory bound: no [N, V] buffer is ever allocated.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../src/kernels/backend.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward, noGrad, requireGrad } from '../src/tensor/autograd.ts';
import { tidy } from '../src/tensor/tensor.ts';
import {
  add, crossEntropy, crossEntropyRows, embedding, expand, klDivRows, linear, mul, sum, tensor,
} from '../src/tensor/ops.ts';
import { linearCrossEntropy, linearCrossEntropyRows, linearKlDivRows } from '../src/tensor/linear-cross-entropy.ts';
import { expectClose, probeForTests, randomFloats, randomInts, registerRequiredFailure } from './webgpu-helpers.ts';

const probe = await probeForTests('linear-cross-entropy');
registerRequiredFailure(probe.reason);

interface LossCase {
  rows: number;
  hidden: number;
  vocab: number;
  chunkRows: number;
  /** 'none': no mask; 'binary': 0/1; 'weighted': values in [0, 1]. */
  mask: 'none' | 'binary' | 'weighted';
  ignored: boolean;
  head: 'untied' | 'tied' | 'bf16' | 'trained';
  reduction: 'mean' | 'sum';
  seed: number;
}

const lossCases = fc.record({
  rows: fc.integer({ min: 1, max: 12 }),
  hidden: fc.integer({ min: 1, max: 9 }),
  vocab: fc.integer({ min: 2, max: 40 }),
  chunkRows: fc.integer({ min: 1, max: 14 }),
  mask: fc.constantFrom('none' as const, 'binary' as const, 'weighted' as const),
  ignored: fc.boolean(),
  head: fc.constantFrom('untied' as const, 'tied' as const, 'bf16' as const, 'trained' as const),
  reduction: fc.constantFrom('mean' as const, 'sum' as const),
  seed: fc.integer({ min: 0, max: 1e6 }),
});

interface Outcome {
  loss: number;
  grads: Float32Array[];
}

/**
 * hidden = x + 0.5 · embed(ids) when the head is tied (the table gets gradients from both uses), else x; the
 * loss either chunked or through the [N, V] logits. Returns the loss and the gradients of every leaf.
 */
async function runLoss(c: LossCase, backend: Backend, chunked: boolean): Promise<Outcome> {
  const { rows, hidden: H, vocab: V, seed } = c;
  const x = requireGrad(tensor(randomFloats(rows * H, seed, 2), [rows, H], { backend }));
  const weightValues = randomFloats(V * H, seed + 1, 1.5);
  const weight = c.head === 'bf16'
    ? tensor(weightValues, [V, H], { backend, dtype: 'bf16' })
    : tensor(weightValues, [V, H], { backend });
  if (c.head === 'tied' || c.head === 'trained') requireGrad(weight);
  const targetValues = randomInts(rows, seed + 2, 0, V);
  const ignoredRows = randomInts(rows, seed + 3, 0, 3);
  if (c.ignored) targetValues.forEach((_, r) => { if (ignoredRows[r] === 0) targetValues[r] = -100; });
  const targets = tensor(targetValues, [rows], { backend, dtype: 'i32' });
  const maskValues = c.mask === 'binary'
    ? Float32Array.from(randomInts(rows, seed + 4, 0, 2))
    : Float32Array.from(randomFloats(rows, seed + 4), (v) => Math.abs(v));
  const mask = c.mask === 'none' ? undefined : tensor(maskValues, [rows], { backend });
  const ids = tensor(randomInts(rows, seed + 5, 0, V), [rows], { backend, dtype: 'i32' });
  const loss = tidy(() => {
    const h = c.head === 'tied' ? add(x, mul(embedding(weight, ids), 0.5)) : x;
    if (chunked) return linearCrossEntropy(h, weight, targets, { mask, chunkRows: c.chunkRows, reduction: c.reduction });
    // The unchunked reference scores ignored rows 0 through its mask (its kernel never reads their targets).
    const counted = Float32Array.from(targetValues, (t, r) => (t >= 0 ? (mask ? maskValues[r]! : 1) : 0));
    const referenceMask = tensor(counted, [rows], { backend });
    const logits = linear(h, weight);
    return c.reduction === 'sum' ? sum(crossEntropyRows(logits, targets, referenceMask)) : crossEntropy(logits, targets, referenceMask);
  });
  backward(loss);
  const leaves = c.head === 'tied' || c.head === 'trained' ? [x, weight] : [x];
  const grads = await Promise.all(leaves.map((t) => t.grad!.toFloat32Array()));
  const value = await loss.item();
  for (const t of [x, weight, targets, ids, loss, mask, ...leaves.map((l) => l.grad)]) t?.dispose();
  return { loss: value, grads };
}

async function checkAgainstUnchunked(c: LossCase, backend: Backend): Promise<void> {
  const chunked = await runLoss(c, backend, true);
  const reference = await runLoss(c, backend, false);
  expectClose([chunked.loss], [reference.loss], { rtol: 1e-5, atol: 1e-6 }, 'loss');
  expect(chunked.grads.length).toBe(reference.grads.length);
  chunked.grads.forEach((g, i) => expectClose(g, reference.grads[i]!, { rtol: 1e-4, scaledAtol: 1e-5, atol: 1e-7 }, `grad ${i}`));
}

/** Per-row CE and KL (p broadcast over B copies of q's rows) against the unchunked rows. */
async function checkRows(backend: Backend, seed: number, batch: number, tokens: number, H: number, V: number, chunkRows: number): Promise<void> {
  const p = tensor(randomFloats(tokens * H, seed, 2), [1, tokens, H], { backend });
  const q = tensor(randomFloats(batch * tokens * H, seed + 1, 2), [batch, tokens, H], { backend });
  const weight = tensor(randomFloats(V * H, seed + 2, 1.5), [V, H], { backend });
  const targetValues = randomInts(batch * tokens, seed + 3, 0, V);
  targetValues[0] = -100;
  const targets = tensor(targetValues, [batch, tokens], { backend, dtype: 'i32' });
  const mask = tensor(Float32Array.from(targetValues, (t) => (t >= 0 ? 1 : 0)), [batch, tokens], { backend });
  const [ce, ceRef, kl, klRef] = await noGrad(async () => {
    const values = [
      linearCrossEntropyRows(q, weight, targets, { chunkRows }),
      crossEntropyRows(linear(q, weight), targets, mask),
      linearKlDivRows(p, q, weight, { chunkRows }),
      klDivRows(expand(linear(p, weight), [batch, tokens, V]), linear(q, weight)),
    ];
    const out = await Promise.all(values.map((t) => t.toFloat32Array()));
    for (const t of values) t.dispose();
    return out;
  });
  expectClose(ce!, ceRef!, { rtol: 1e-5, atol: 1e-6 }, 'ce rows');
  expectClose(kl!, klRef!, { rtol: 1e-4, atol: 1e-6 }, 'kl rows');
  for (const t of [p, q, weight, targets, mask]) t.dispose();
}

function suite(name: string, getBackend: () => Backend, runs: number): void {
  describe(`chunked linear losses on ${name}`, () => {
    it('linearCrossEntropy equals the unchunked loss, gradients included (shapes, chunks, masks, heads)', async () => {
      await fc.assert(fc.asyncProperty(lossCases, (c) => checkAgainstUnchunked(c, getBackend())), { numRuns: runs, seed: 1818 });
    });

    it('per-row CE and the broadcast KL equal the unchunked rows', async () => {
      await fc.assert(fc.asyncProperty(
        fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 8 }), fc.integer({ min: 2, max: 30 }), fc.integer({ min: 1, max: 10 }),
        (seed, batch, tokens, H, V, chunkRows) => checkRows(getBackend(), seed, batch, tokens, H, V, chunkRows),
      ), { numRuns: Math.ceil(runs / 2), seed: 1819 });
    });

    it('never allocates an [N, V] buffer: the peak grows with the chunk, not with N', async () => {
      const backend = getBackend();
      const [N, H, V, chunkRows] = [256, 8, 2000, 8];
      const x = requireGrad(tensor(randomFloats(N * H, 1), [N, H], { backend }));
      const weight = tensor(randomFloats(V * H, 2), [V, H], { backend });
      const targets = tensor(randomInts(N, 3, 0, V), [N], { backend, dtype: 'i32' });
      await backend.sync();
      const before = backend.memory().liveBytes;
      backend.resetPeak();
      const loss = linearCrossEntropy(x, weight, targets, { chunkRows });
      backward(loss);
      await backend.sync();
      const extra = backend.memory().peakBytes - before;
      // Two [c, V] f32 buffers (logits and their gradient) plus O(N·H) bookkeeping; [N, V] f32 is 2 MB.
      expect(extra).toBeLessThan(2 * chunkRows * V * 4 + 8 * N * H * 4 + 64 * N);
      expect(extra).toBeLessThan(N * V * 4 / 4);
      for (const t of [x.grad, x, weight, targets, loss]) t?.dispose();
    });

    it('rejects shapes that do not fit, naming them', () => {
      const backend = getBackend();
      const h = tensor(new Float32Array(6), [2, 3], { backend });
      const w = tensor(new Float32Array(8), [4, 2], { backend });
      const t = tensor(new Int32Array(2), [2], { backend, dtype: 'i32' });
      expect(() => linearCrossEntropy(h, w, t)).toThrow(/hidden \[2, 3\] must end in the weight's hidden size 2/);
      expect(() => linearCrossEntropy(h, tensor(new Float32Array(12), [4, 3], { backend }), t, { chunkRows: 0 })).toThrow(/chunkRows must be a positive integer/);
      for (const x of [h, w, t]) x.dispose();
    });
  });
}

suite('cpu', getCpuBackend, 40);
if (probe.backend) {
  const gpu = probe.backend;
  suite('webgpu', () => gpu, 12);
}
