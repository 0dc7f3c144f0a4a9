// Losses read straight off the final hidden states, in row chunks, so that no [N, V] logits tensor ever
// exists (Liger Kernel's fused linear cross-entropy, Apple's Cut Cross-Entropy). Per chunk of c rows:
//   logits_c = h_c Wᵀ                      [c, V]   (W [V, H] the lm_head, or the embedding when tied)
//   loss_r   = m_r · (lse(logits_r) − logits_r[target_r])          rows with target < 0 or m_r = 0 count 0
//   dlogits  = m_r · (softmax(logits_r) − onehot(target_r))  [c, V]
//   dh_c     = dlogits W                   [c, H]
//   dW      += dlogits_cᵀ h_c              [V, H]   (only when W trains: --full, pretraining)
// and the chunk's logits are freed before the next chunk: the loss's peak is O(c·V), not O(N·V).
//
// Gradients are computed in the forward, Liger's way, not recomputed in the backward, CCE's way. The loss is
// a scalar, so its upstream gradient g only scales them: backward returns g·dh (and g·dW). Memory: this keeps
// dh [N, H] f32 from forward to backward, where recomputing would keep h [N, H] instead, so the two cost the
// same; compute: recomputing runs the N·H·V logits product a third time (forward, recompute, dh), this runs
// it twice. Under noGrad (evaluation, ablation) nothing but the loss is computed.
//
// Every step is an existing backend kernel (matmul, crossEntropy, crossEntropyBackward, klDiv, assign; the CPU
// backend's crossEntropyWithGrad fuses the two cross-entropy kernels), so the op runs unchanged on the CPU and
// WebGPU backends; the per-row arithmetic is the unchunked op's own, and the
// losses equal it up to the matmul's summation order.
//
// Legend: N rows (B·T tokens), H hidden, V vocab, c rows per chunk.
import type { Backend, Storage } from '../kernels/backend.ts';
import { isGradEnabled, noGrad, record } from './autograd.ts';
import { broadcastShapes, cast, div, greater, maximum, mul, reshape, sum } from './ops.ts';
import { Tensor, contiguousStrides, formatShape, tidy } from './tensor.ts';

/** Bytes of one chunk's f32 logits the default chunk size aims at (its gradient is as large again). */
export const LOSS_CHUNK_BYTES = 64 * 2 ** 20;

/** Rows per chunk so that one chunk's logits [c, V] f32 stay within LOSS_CHUNK_BYTES: 110 at V = 152 064. */
export function defaultLossChunkRows(vocab: number): number {
  return Math.max(1, Math.floor(LOSS_CHUNK_BYTES / (4 * vocab)));
}

export interface LinearLossOptions {
  /** Rows per chunk (default: defaultLossChunkRows(V)). */
  chunkRows?: number;
}

export interface LinearCrossEntropyOptions extends LinearLossOptions {
  /** f32 [...] (hidden's shape less its last axis): each row's weight, 1 = scored, 0 = ignored. */
  mask?: Tensor;
  /** 'mean' over the scored rows (Σ mask, at least 1), as crossEntropy; 'sum' as sum(crossEntropyRows). */
  reduction?: 'mean' | 'sum';
}

const wrap = (backend: Backend, storage: Storage, shape: readonly number[]) => Tensor.fromStorage(backend, storage, shape);

function f32Rows(t: Tensor, hidden: number): Tensor {
  if (t.dtype === 'i32') throw new Error(`linear loss: hidden states must be float, got i32 ${formatShape(t.shape)}`);
  if (t.dtype === 'f32' && t.isContiguous) return t.view([t.size / hidden, hidden], [hidden, 1], t.offset);
  return wrap(t.backend, t.backend.copy(t, 'f32'), [t.size / hidden, hidden]);
}

/** W [V, H], contiguous in its own dtype (a bf16 head is read packed by the matmul). */
function packedWeight(weight: Tensor): Tensor {
  if (weight.isContiguous) return weight.view(weight.shape, weight.strides, weight.offset);
  return wrap(weight.backend, weight.backend.copy(weight, weight.dtype), weight.shape);
}

function checkHead(op: string, hidden: Tensor, weight: Tensor): [vocab: number, width: number] {
  if (weight.rank !== 2) throw new Error(`${op}: weight must be [vocab, hidden], got ${formatShape(weight.shape)}`);
  const [vocab, width] = weight.shape as [number, number];
  if (hidden.rank < 1 || hidden.shape.at(-1) !== width) {
    throw new Error(`${op}: hidden ${formatShape(hidden.shape)} must end in the weight's hidden size ${width} (weight ${formatShape(weight.shape)})`);
  }
  if (weight.backend !== hidden.backend) throw new Error(`${op}: hidden and weight live on different backends (${hidden.backend.name} and ${weight.backend.name})`);
  return [vocab, width];
}

function chunkRowsOf(op: string, options: LinearLossOptions, vocab: number): number {
  const chunk = options.chunkRows ?? defaultLossChunkRows(vocab);
  if (!Number.isInteger(chunk) || chunk < 1) throw new RangeError(`${op}: chunkRows must be a positive integer, got ${chunk}`);
  return chunk;
}

const rowsView = (storage: Storage, start: number, rows: number, width: number) => ({
  storage, shape: [rows, width], strides: [width, 1], offset: start * width,
});

/** logits [c, V] = rows [start, start + c) of h [N, H] times Wᵀ. */
function chunkLogits(backend: Backend, h: Tensor, start: number, rows: number, w: Tensor): Storage {
  const [vocab, width] = w.shape as [number, number];
  return backend.matmul(h.storage, h.offset + start * width, w.storage, w.offset, {
    batch: 1, m: rows, n: vocab, k: width, transA: false, transB: true, aBatchStride: 0, bBatchStride: 0,
  });
}

/** Each row's weight in the loss: mask (or 1) where target >= 0, else 0. f32 [N]. */
function rowWeights(targets: Tensor, mask: Tensor | undefined): Tensor {
  return noGrad(() => tidy(() => {
    const counted = greater(cast(targets, 'f32'), -0.5);
    return reshape(mask ? mul(counted, mask) : counted, [targets.size]);
  }));
}

interface CrossEntropyChunks {
  /** Per-row losses [N]. */
  losses: Tensor;
  /** dΣloss/dh [N, H], when asked for. */
  dh: Tensor | null;
  /** dΣloss/dW [V, H], when asked for. */
  dw: Tensor | null;
}

/**
 * One chunk's per-row losses [c] and, with `withGrad`, dlogits [c, V] = m · (softmax − onehot): in one pass
 * per row where the backend fuses the two (crossEntropyWithGrad), else its crossEntropy and
 * crossEntropyBackward with dRow = m.
 */
function chunkCrossEntropy(
  backend: Backend, logits: Storage, targets: Storage, weights: Storage, rows: number, vocab: number, withGrad: boolean,
): { loss: Storage; dlogits: Storage | null } {
  if (withGrad && backend.crossEntropyWithGrad) return backend.crossEntropyWithGrad(logits, targets, weights, rows, vocab);
  const loss = backend.crossEntropy(logits, targets, weights, rows, vocab);
  return { loss, dlogits: withGrad ? backend.crossEntropyBackward(logits, targets, weights, rows, vocab) : null };
}

/** The chunk loop: per-row losses of h [N, H] and, when asked, the gradients of their sum. */
function crossEntropyChunks(
  h: Tensor, w: Tensor, targets: Tensor, weights: Tensor, chunk: number, needH: boolean, needW: boolean,
): CrossEntropyChunks {
  const backend = h.backend;
  const [vocab, width] = w.shape as [number, number];
  const rows = h.shape[0]!;
  const losses = backend.full(rows, 0, 'f32');
  const dh = needH ? backend.full(rows * width, 0, 'f32') : null;
  let dw: Storage | null = null;
  for (let start = 0; start < rows; start += chunk) {
    const c = Math.min(chunk, rows - start);
    const logits = chunkLogits(backend, h, start, c, w);
    const chunkTargets = backend.copy({ storage: targets.storage, shape: [c], strides: [1], offset: targets.offset + start }, 'i32');
    const chunkWeights = backend.copy({ storage: weights.storage, shape: [c], strides: [1], offset: weights.offset + start }, 'f32');
    const { loss: chunkLoss, dlogits } = chunkCrossEntropy(backend, logits, chunkTargets, chunkWeights, c, vocab, needH || needW);
    backend.assign(rowsView(losses, start, c, 1), rowsView(chunkLoss, 0, c, 1));
    backend.free(chunkLoss);
    backend.free(logits);
    if (dlogits) {
      if (dh) {
        const dhChunk = backend.matmul(dlogits, 0, w.storage, w.offset, {
          batch: 1, m: c, n: width, k: vocab, transA: false, transB: false, aBatchStride: 0, bBatchStride: 0,
        });
        backend.assign(rowsView(dh, start, c, width), rowsView(dhChunk, 0, c, width));
        backend.free(dhChunk);
      }
      if (needW) {
        // dlogitsᵀ [V, c] times h_c [c, H].
        const dwChunk = backend.matmul(dlogits, 0, h.storage, h.offset + start * width, {
          batch: 1, m: vocab, n: width, k: c, transA: true, transB: false, aBatchStride: 0, bBatchStride: 0,
        });
        if (dw) {
          const shape = [vocab, width];
          const total = backend.binary('add', rowsView(dw, 0, vocab, width), rowsView(dwChunk, 0, vocab, width), shape);
          backend.free(dw);
          backend.free(dwChunk);
          dw = total;
        } else dw = dwChunk;
      }
      backend.free(dlogits);
    }
    backend.free(chunkTargets);
    backend.free(chunkWeights);
  }
  return {
    losses: wrap(backend, losses, [rows]),
    dh: dh ? wrap(backend, dh, [rows, width]) : null,
    dw: dw ? wrap(backend, dw, [vocab, width]) : null,
  };
}

interface PreparedRows {
  h: Tensor;
  w: Tensor;
  targets: Tensor;
  weights: Tensor;
  rowShape: readonly number[];
}

function prepareRows(op: string, hidden: Tensor, weight: Tensor, targets: Tensor, mask: Tensor | undefined): PreparedRows {
  const [, width] = checkHead(op, hidden, weight);
  const rowShape = hidden.shape.slice(0, -1);
  if (targets.shape.join() !== rowShape.join()) throw new Error(`${op}: targets must have shape ${formatShape(rowShape)}, got ${formatShape(targets.shape)}`);
  if (targets.dtype !== 'i32') throw new Error(`${op}: targets must be i32 token ids, got ${targets.dtype}`);
  if (mask && mask.shape.join() !== rowShape.join()) throw new Error(`${op}: mask must have shape ${formatShape(rowShape)}, got ${formatShape(mask.shape)}`);
  const flatTargets = targets.isContiguous ? targets.view([targets.size], [1], targets.offset) : wrap(targets.backend, targets.backend.copy(targets, 'i32'), [targets.size]);
  return { h: f32Rows(hidden, width), w: packedWeight(weight), targets: flatTargets, weights: rowWeights(targets, mask), rowShape };
}

function disposeRows(p: PreparedRows): void {
  for (const t of [p.h, p.w, p.targets, p.weights]) t.dispose();
}

/**
 * Σ or mean over rows of m · cross-entropy(h Wᵀ, targets) from hidden [..., H] and the head weight [V, H],
 * in chunks of rows (never an [N, V] tensor): equal to crossEntropy(linear(hidden, weight), targets, mask)
 * ('mean') or sum(crossEntropyRows(...)) ('sum'). Rows with a negative target (-100 padding) count 0.
 * Differentiable with respect to hidden and (when it requires grad, e.g. a tied, trained embedding) weight.
 */
export function linearCrossEntropy(hidden: Tensor, weight: Tensor, targets: Tensor, options: LinearCrossEntropyOptions = {}): Tensor {
  const op = 'linearCrossEntropy';
  const prepared = prepareRows(op, hidden, weight, targets, options.mask);
  const chunk = chunkRowsOf(op, options, weight.shape[0]!);
  const needH = isGradEnabled() && hidden.requiresGrad;
  const needW = isGradEnabled() && weight.requiresGrad;
  try {
    const { losses, dh, dw } = crossEntropyChunks(prepared.h, prepared.w, prepared.targets, prepared.weights, chunk, needH, needW);
    const total = noGrad(() => sum(losses));
    losses.dispose();
    const saved = [dh, dw].filter((t): t is Tensor => t !== null);
    // The loss is Σ (or a constant times Σ) of the rows: its gradients are the precomputed ones times g.
    const summed = record(op, total, [hidden, weight], saved, (g, savedGrads, needs) => {
      const sdh = dh ? savedGrads[0] : undefined;
      const sdw = dw ? savedGrads[dh ? 1 : 0] : undefined;
      return [
        needs[0] && sdh ? reshape(mul(sdh, g), hidden.shape) : null,
        needs[1] && sdw ? mul(sdw, g) : null,
      ];
    });
    for (const t of saved) t.dispose();
    if ((options.reduction ?? 'mean') === 'sum') return summed;
    return tidy(() => div(summed, noGrad(() => maximum(sum(prepared.weights), 1))));
  } finally {
    disposeRows(prepared);
  }
}

/**
 * Per-row m · cross-entropy(h Wᵀ, targets) -> [...] (hidden's shape less its last axis), in row chunks.
 * No gradient (evaluation, ablation): train through linearCrossEntropy.
 */
export function linearCrossEntropyRows(
  hidden: Tensor, weight: Tensor, targets: Tensor, options: LinearCrossEntropyOptions = {},
): Tensor {
  const op = 'linearCrossEntropyRows';
  if (isGradEnabled() && (hidden.requiresGrad || weight.requiresGrad)) {
    throw new Error(`${op}: per-row losses carry no gradient; use linearCrossEntropy (a scalar) to train, or run under noGrad`);
  }
  const prepared = prepareRows(op, hidden, weight, targets, options.mask);
  const chunk = chunkRowsOf(op, options, weight.shape[0]!);
  try {
    const { losses } = crossEntropyChunks(prepared.h, prepared.w, prepared.targets, prepared.weights, chunk, false, false);
    const out = losses.view(prepared.rowShape, contiguousStrides(prepared.rowShape), 0);
    losses.dispose();
    return out;
  } finally {
    disposeRows(prepared);
  }
}

/**
 * Per-row KL(softmax(p Wᵀ) ‖ softmax(q Wᵀ)) from two sets of hidden states, in row chunks: p [..., T, H] may
 * have size-1 leading axes that broadcast over q's [B, ..., T, H] (one full run against B ablated ones), and
 * then each chunk of p's logits is computed once and compared with every broadcast copy of q's rows.
 * -> q's shape less its last axis. No gradient (the ablation sweep's measure).
 */
export function linearKlDivRows(p: Tensor, q: Tensor, weight: Tensor, options: LinearLossOptions = {}): Tensor {
  const op = 'linearKlDivRows';
  if (isGradEnabled() && (p.requiresGrad || q.requiresGrad || weight.requiresGrad)) {
    throw new Error(`${op}: the chunked KL carries no gradient; run it under noGrad`);
  }
  const [vocab, width] = checkHead(op, q, weight);
  checkHead(op, p, weight);
  if (broadcastShapes(op, p.shape, q.shape).join() !== q.shape.join()) {
    throw new Error(`${op}: p ${formatShape(p.shape)} does not broadcast to q ${formatShape(q.shape)}`);
  }
  const pRows = p.size / width;
  const qRows = q.size / width;
  // Broadcasting only over leading axes: p's rows then repeat as whole blocks of q's rows.
  const leadingOnes = p.shape.findIndex((d) => d !== 1);
  const tail = p.shape.slice(leadingOnes < 0 ? p.rank - 1 : leadingOnes);
  if (tail.join() !== q.shape.slice(q.rank - tail.length).join()) {
    throw new Error(`${op}: p ${formatShape(p.shape)} may broadcast over q ${formatShape(q.shape)} only along leading axes`);
  }
  const chunk = chunkRowsOf(op, options, vocab);
  const backend = q.backend;
  const hp = f32Rows(p, width);
  const hq = f32Rows(q, width);
  const w = packedWeight(weight);
  const out = backend.full(qRows, 0, 'f32');
  try {
    for (let start = 0; start < pRows; start += chunk) {
      const c = Math.min(chunk, pRows - start);
      const logitsP = chunkLogits(backend, hp, start, c, w);
      for (let block = 0; block < qRows / pRows; block++) {
        const logitsQ = chunkLogits(backend, hq, block * pRows + start, c, w);
        const kl = backend.klDiv(logitsP, logitsQ, c, vocab);
        backend.assign(rowsView(out, block * pRows + start, c, 1), rowsView(kl, 0, c, 1));
        backend.free(kl);
        backend.free(logitsQ);
      }
      backend.free(logitsP);
    }
  } finally {
    for (const t of [hp, hq, w]) t.dispose();
  }
  return wrap(backend, out, q.shape.slice(0, -1));
}
