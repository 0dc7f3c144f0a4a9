// The cross-entropy path over Qwen's 151 936-token vocabulary (issue 21, must 5: ≥ 1 GB/s of logits).
// Cases: the backend's crossEntropy (forward: log-sum-exp and the target's logit per row), crossEntropyBackward
// (softmax - onehot, written as a new [rows, V] buffer), both one after the other, and both fused
// (crossEntropyWithGrad, what the chunked loss calls where the backend has it), on one chunk of the chunked loss
// (src/tensor/linear-cross-entropy.ts): rows = defaultLossChunkRows(V) = 110. GB/s counts the logits read
// (rows · V · 4 bytes) per iteration, whatever else a kernel writes, so the cases compare directly. The peer:
// PyTorch's F.cross_entropy forward + backward on the same logits (bench/peers/torch-loss.ts).
// profileLinearCrossEntropy times one linearCrossEntropy forward + backward at the 2-layer model's loss shape
// (h [N, 896] f32 requiring grad, tied bf16 W [V, 896] without) per backend method, to say where the time goes.
import {
  Random, backward, defaultLossChunkRows, linearCrossEntropy, randomNormalArray, requireGrad, tensor, type Backend,
} from '../../src/tensor/index.ts';
import type { Storage } from '../../src/kernels/backend.ts';
import type { CaseSpec, Runnable } from '../harness.ts';
import { torchImplementation } from '../peers/torch.ts';
import type { CrossEntropyInputs } from '../peers/torch-loss.ts';
import { rank1Implementation } from './rank1.ts';
import { timedBackend } from '../timed-backend.ts';

export const lossVocab = 151_936;
export const lossRows = defaultLossChunkRows(lossVocab);

export type Which = 'fwd' | 'bwd' | 'fwd+bwd' | 'fused';

interface LossInputs { logits: Float32Array; targets: Int32Array; loss0: number; grad0: number }

let shared: LossInputs | null = null;
function lossInputs(): LossInputs {
  if (shared) return shared;
  const rng = new Random(4242);
  // Logits of a freshly initialised LM head are small: N(0, 1) · 2 keeps exp's range realistic.
  const logits = randomNormalArray(lossRows * lossVocab, rng).map((v) => 2 * v);
  const targets = Int32Array.from({ length: lossRows }, (_, r) => (r * 7919 + 13) % lossVocab);
  let max = -Infinity;
  for (let c = 0; c < lossVocab; c++) max = Math.max(max, logits[c]!);
  let sum = 0;
  for (let c = 0; c < lossVocab; c++) sum += Math.exp(logits[c]! - max);
  const lse = max + Math.log(sum);
  shared = { logits, targets, loss0: lse - logits[targets[0]!]!, grad0: Math.exp(logits[0]! - lse) - (targets[0] === 0 ? 1 : 0) };
  return shared;
}

const caseNames: Record<Which, string> = {
  fwd: 'crossEntropy', bwd: 'crossEntropyBackward', 'fwd+bwd': 'crossEntropy fwd+bwd', fused: 'crossEntropy fused fwd+bwd',
};

/** The case's name, size, bytes and expected value, whoever runs it. */
function crossEntropySpec(which: Which) {
  const inputs = lossInputs();
  const expected = which === 'bwd' ? inputs.grad0 : inputs.loss0;
  return {
    group: 'loss' as const, name: `${caseNames[which]} ${lossRows}×${lossVocab}`, size: lossVocab, bytes: lossRows * lossVocab * 4,
    expected: { value: expected, tolerance: 1e-4 * Math.abs(expected) + 1e-6 },
  };
}

/** The peer's spec (loss and gradient, as the fused case) and its inputs; bench/peers/torch-loss.ts runs it. */
export function torchCrossEntropySpec(): { spec: CaseSpec; inputs: CrossEntropyInputs } {
  const { logits, targets } = lossInputs();
  const spec: CaseSpec = {
    ...crossEntropySpec('fused'), impl: torchImplementation,
    setup: () => Promise.reject(new Error('PyTorch runs in a child process')),
  };
  return { spec, inputs: { logits, targets, rows: lossRows, vocab: lossVocab } };
}

export function rank1CrossEntropyCase(backend: Backend, which: Which): CaseSpec {
  const rows = lossRows;
  const vocab = lossVocab;
  const inputs = lossInputs();
  return {
    ...crossEntropySpec(which), impl: rank1Implementation(backend),
    async setup(): Promise<Runnable> {
      const logits = backend.upload(inputs.logits, 'f32');
      const targets = backend.upload(inputs.targets, 'i32');
      const ones = backend.full(rows, 1, 'f32');
      const first = async (s: Storage) => {
        const data = await backend.read({ storage: s, shape: [1], strides: [1], offset: 0 });
        backend.free(s);
        return data[0]!;
      };
      return {
        async iterate() {
          if (which === 'fwd') return first(backend.crossEntropy(logits, targets, ones, rows, vocab));
          if (which === 'fused') {
            if (!backend.crossEntropyWithGrad) throw new Error(`the ${backend.name} backend has no fused crossEntropyWithGrad`);
            const { loss, dlogits } = backend.crossEntropyWithGrad(logits, targets, ones, rows, vocab);
            await first(dlogits);
            return first(loss);
          }
          const grad = backend.crossEntropyBackward(logits, targets, ones, rows, vocab);
          if (which === 'bwd') return first(grad);
          const loss = first(backend.crossEntropy(logits, targets, ones, rows, vocab));
          await first(grad);
          return loss;
        },
        dispose() {
          backend.free(logits);
          backend.free(targets);
          backend.free(ones);
        },
      };
    },
  };
}

export interface LossProfile {
  what: string;
  rows: number;
  hidden: number;
  vocab: number;
  chunkRows: number;
  totalMs: number;
  /** Backend method → calls and milliseconds inside it (synchronous CPU kernels: the time is the work). */
  byKernel: Record<string, { calls: number; ms: number; share: number }>;
  crossEntropyLogitsGBps: number;
}

/**
 * One linearCrossEntropy forward + backward with every backend method timed (bench/timed-backend.ts). Meant
 * for the CPU backend, whose kernels are synchronous; on WebGPU the times would be of queueing, not of work.
 */
export async function profileLinearCrossEntropy(cpu: Backend, rows: number, hidden = 896): Promise<LossProfile> {
  const { backend: timed, byKernel: times, reset } = timedBackend(cpu);
  const rng = new Random(77);
  const h = requireGrad(tensor(randomNormalArray(rows * hidden, rng), [rows, hidden], { backend: timed }));
  const w = tensor(randomNormalArray(lossVocab * hidden, rng).map((v) => 0.02 * v), [lossVocab, hidden], { backend: timed, dtype: 'bf16' });
  const targets = tensor(Int32Array.from({ length: rows }, (_, r) => (r * 7919 + 13) % lossVocab), [rows], { backend: timed, dtype: 'i32' });
  reset();
  const start = performance.now();
  const loss = linearCrossEntropy(h, w, targets);
  backward(loss);
  await timed.read({ storage: h.grad!.storage, shape: [1], strides: [1], offset: h.grad!.offset });
  const totalMs = performance.now() - start;
  const byKernel = Object.fromEntries(Object.entries(times).map(([name, t]) => [name, { ...t, share: t.ms / totalMs }]));
  const ceMs = (byKernel.crossEntropy?.ms ?? 0) + (byKernel.crossEntropyBackward?.ms ?? 0) + (byKernel.crossEntropyWithGrad?.ms ?? 0);
  loss.dispose();
  h.grad?.dispose();
  h.dispose();
  w.dispose();
  targets.dispose();
  return {
    what: 'linearCrossEntropy forward + backward: h [rows, hidden] f32 (requires grad) · tied W [V, hidden] bf16 (frozen), per backend method',
    rows, hidden, vocab: lossVocab, chunkRows: lossRows, totalMs,
    byKernel: Object.fromEntries(Object.entries(byKernel).sort((a, b) => b[1].ms - a[1].ms)),
    crossEntropyLogitsGBps: ceMs > 0 ? (rows * lossVocab * 4) / (ceMs / 1e3) / 1e9 : 0,
  };
}
