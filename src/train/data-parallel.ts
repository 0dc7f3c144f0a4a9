// Data-parallel training over several devices (`rank1 train --devices N`). Each replica is a copy of the model
// on a backend of its own: the same frozen weights and a copy of the trainable adapters. A step's micro-batches
// are dealt out round-robin; each replica runs forward + backward on its share and accumulates the gradients
// on its device. The gradients are then read back and summed on the host in replica order (the same sum
// whatever the timing) into replica 0's, where clipping and AdamW run exactly as on one device; the updated
// values are written back to the other replicas. Rank-1 adapters make the traffic small: 8.4 M parameters
// (34 MB of f32) each way per step for Qwen2.5-32B.
import type { Backend } from '../kernels/backend.ts';
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import { cat, detach, reshape, tensor, zeros } from '../tensor/ops.ts';
import { backward, noGrad, zeroGrad } from '../tensor/autograd.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Batch } from './data-batch.ts';

/** A model on one device and its trainable parameters (the same order on every replica). */
export interface Replica {
  model: Qwen2Model;
  params: readonly Tensor[];
}

/**
 * Refuses a device count a run cannot use: fewer than one, more than the micro-batches of a step, or several
 * for a full finetune (whose gradients are the whole model, not adapters).
 */
export function checkDeviceCount(devices: number, { batchSize, microBatch, mode }: { batchSize: number; microBatch: number; mode: 'adapter' | 'full' }): void {
  if (!Number.isInteger(devices) || devices < 1) throw new Error(`--devices ${devices}: expected a positive integer`);
  if (devices > 1 && mode !== 'adapter') throw new Error(`--devices ${devices}: data-parallel training trains adapters; a --full finetune runs on one device`);
  const microBatches = Math.floor(batchSize / microBatch);
  if (devices > microBatches) {
    throw new Error(`--devices ${devices}: a step has only ${microBatches} micro-batch${microBatches === 1 ? '' : 'es'} ` +
      `(--batch ${batchSize} / --micro-batch ${microBatch}), so ${devices - microBatches} device(s) would idle; ` +
      `use at most --devices ${microBatches}, or raise --batch or lower --micro-batch`);
  }
}

/** The micro-batch indices replica r runs: i ≡ r (mod replicas), so rows sorted by length are shared evenly. */
export function replicaShares(microBatches: number, replicas: number): number[][] {
  return Array.from({ length: replicas }, (_, r) => Array.from({ length: Math.ceil((microBatches - r) / replicas) }, (_, k) => r + k * replicas));
}

/**
 * A WebGPU backend per entry of `gpus`, each a device of its own, on the GPU at that PCI address (null: the
 * default adapter, where Dawn hands out several devices). The backends are destroyed again if one cannot be had.
 */
export async function openWebGpuBackends(gpus: readonly (string | null)[]): Promise<Backend[]> {
  const { probeWebGpu } = await import('../kernels/webgpu/index.ts');
  const opened: { destroy(): void; backend: Backend }[] = [];
  for (const [i, gpu] of gpus.entries()) {
    const probe = await probeWebGpu({ gpu });
    if (!('backend' in probe)) {
      for (const o of opened) o.destroy();
      throw new Error(`--devices: WebGPU device ${i + 1} of ${gpus.length}${gpu === null ? '' : ` (GPU ${gpu})`} is unavailable: ${probe.reason}`);
    }
    opened.push({ destroy: () => probe.backend.destroy(), backend: probe.backend });
  }
  return opened.map((o) => o.backend);
}

/**
 * The tensors (all on one backend) read back as one flat f32 array, in order: one transfer instead of one per
 * tensor (Qwen2.5-32B has 896 adapter vectors).
 */
async function readFlat(tensors: readonly Tensor[]): Promise<Float32Array> {
  const flat = noGrad(() => tidy(() => cat(tensors.map((t) => reshape(t, [t.size])), 0)));
  try {
    return await flat.toFloat32Array();
  } finally {
    flat.dispose();
  }
}

export class DataParallel {
  /**
   * `replicas[0]` is the primary: its parameters are the ones the optimizer updates and the trainer saves.
   * Every replica must hold the same parameters in the same order, each on its own model's backend.
   */
  constructor(readonly replicas: readonly Replica[]) {
    const [primary] = replicas;
    if (!primary) throw new Error('DataParallel: no replicas');
    replicas.forEach((replica, r) => {
      if (replica.params.length !== primary.params.length) {
        throw new Error(`DataParallel: replica ${r} has ${replica.params.length} parameters, replica 0 has ${primary.params.length}`);
      }
      replica.params.forEach((p, i) => {
        const q = primary.params[i]!;
        if (p.shape.join() !== q.shape.join()) throw new Error(`DataParallel: replica ${r} parameter ${p.name ?? i} is [${p.shape.join(', ')}], replica 0's is [${q.shape.join(', ')}]`);
        if (p.backend !== replica.model.backend) throw new Error(`DataParallel: replica ${r} parameter ${p.name ?? i} lives on another backend than its model`);
      });
    });
  }

  get primary(): Replica {
    return this.replicas[0]!;
  }

  /**
   * Runs `batches` over the replicas (micro-batch i on replica i mod N), each contributing `microLoss(model,
   * batch)` (a scalar already divided by the step's scored tokens) to the loss and its gradient, then leaves
   * the summed gradients in the primary's parameters. Returns the step's loss: the micro-batch losses added in
   * micro-batch order in f32, as the one-device loop adds them.
   */
  async accumulate(batches: readonly Batch[], microLoss: (model: Qwen2Model, batch: Batch) => Tensor): Promise<number> {
    const shares = replicaShares(batches.length, this.replicas.length);
    if (shares.some((share) => share.length === 0)) {
      throw new Error(`DataParallel: ${batches.length} micro-batches cannot keep ${this.replicas.length} devices busy`);
    }
    const losses: (Tensor | null)[] = batches.map(() => null);
    try {
      // Round by round, so every device has work queued while the next one's is recorded.
      for (let round = 0; round < shares[0]!.length; round++) {
        const forwards = this.replicas.flatMap((replica, r) => {
          const i = shares[r]![round];
          return i === undefined ? [] : [{ model: replica.model, i, loss: microLoss(replica.model, batches[i]!) }];
        });
        // Offloaded checkpoints (--offload-checkpoints) must reach host memory before a backward reads them.
        await Promise.all(forwards.map(({ model }) => (model.offloadCheckpoints ? model.settleOffloadedCheckpoints() : undefined)));
        for (const { i, loss } of forwards) {
          backward(loss);
          losses[i] = keep(detach(loss));
          loss.dispose();
        }
      }
      const values = await Promise.all(losses.map((l) => l!.item()));
      await this.sumGradients();
      return values.reduce((total, v) => Math.fround(total + v), 0);
    } finally {
      for (const l of losses) l?.dispose();
    }
  }

  /**
   * Replaces the primary's gradients by the sum over replicas (in replica order, f32) and clears the others'.
   * A parameter no replica has a gradient for keeps none (AdamW skips it, as on one device).
   */
  private async sumGradients(): Promise<void> {
    const present = this.primary.params.map((_, i) => this.replicas.some((replica) => replica.params[i]!.grad));
    const grads = await Promise.all(this.replicas.map(async (replica) => {
      const zeroFilled = replica.params.map((p) => p.grad ?? zeros(p.shape, { backend: p.backend }));
      try {
        return await readFlat(zeroFilled);
      } finally {
        zeroFilled.forEach((g, i) => g !== replica.params[i]!.grad && g.dispose());
      }
    }));
    const total = grads[0]!;
    for (const g of grads.slice(1)) for (let k = 0; k < total.length; k++) total[k]! += g[k]!;
    let offset = 0;
    this.primary.params.forEach((p, i) => {
      p.grad?.dispose();
      p.grad = present[i] ? keep(tensor(total.subarray(offset, offset + p.size), p.shape, { backend: p.backend })) : null;
      offset += p.size;
    });
    for (const replica of this.replicas.slice(1)) zeroGrad(replica.params);
  }

  /** Writes the primary's parameter values into every other replica (after each update, and at the start). */
  async broadcast(): Promise<void> {
    if (this.replicas.length === 1) return;
    const values = await readFlat(this.primary.params);
    for (const replica of this.replicas.slice(1)) {
      let offset = 0;
      for (const p of replica.params) {
        const source = tensor(values.subarray(offset, offset + p.size), p.shape, { backend: p.backend });
        p.backend.assign(p, source);
        source.dispose();
        offset += p.size;
      }
    }
  }
}
