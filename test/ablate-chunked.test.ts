// The ablation sweep reads KL(full ‖ ablated) and the cross-entropy off the final hidden states in row chunks
// (no [T, V] logits): the same numbers as the unchunked ops on the logits of one ablated forward at a time,
// whatever the chunk size and batch.
import { describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { noGrad } from '../src/tensor/autograd.ts';
import { tidy } from '../src/tensor/tensor.ts';
import { crossEntropyRows, klDivRows, mean, sum, tensor } from '../src/tensor/ops.ts';
import { withHooks, zeroAblate } from '../src/model/hook-registry.ts';
import { randomQwen2Model, randomRankOneAdapters, tinyQwen2Config } from '../src/model/random-model.ts';
import { ablationGroups, ablationSweep } from '../src/interp/ablate.ts';
import { Random } from '../src/tensor/random.ts';
import { expectClose } from './webgpu-helpers.ts';

const cpu = getCpuBackend();

describe('the chunked ablation sweep', () => {
  for (const tied of [false, true]) {
    it(`equals KL and CE on the logits of each ablated forward (${tied ? 'tied' : 'untied'} head)`, async () => {
      const model = randomQwen2Model(tinyQwen2Config({ vocabSize: 40, numHiddenLayers: 2, tieWordEmbeddings: tied }), 31, cpu);
      model.adapters = randomRankOneAdapters(model.dims, 32, cpu, 0.3);
      const rng = new Random(33);
      const examples = [9, 6].map((length, example) => ({ example, inputIds: Int32Array.from({ length }, () => rng.int(40)) }));
      const groups = ablationGroups(2, [...model.adapters.adapters.keys()], 1).filter((_, i) => i % 3 === 0);
      const kl = new Map<string, number>();
      const ce = new Map<string, number>();
      let fullCe = 0;
      for (const { inputIds } of examples) {
        const T = inputIds.length;
        const ids = tensor(inputIds, [1, T], { backend: cpu, dtype: 'i32' });
        const next = new Int32Array(T);
        next.set(inputIds.subarray(1));
        const targets = tensor(next, [1, T], { backend: cpu, dtype: 'i32' });
        const mask = tensor(Float32Array.from({ length: T }, (_, t) => (t < T - 1 ? 1 : 0)), [1, T], { backend: cpu });
        const full = noGrad(() => model.forward(ids));
        fullCe += (await noGrad(() => tidy(() => sum(crossEntropyRows(full, targets, mask)))).item()) / (T - 1);
        for (const group of groups) {
          const [k, c] = await withHooks(model, group.adapters.map((name) => [name, zeroAblate] as const), () => noGrad(async () => {
            const ablated = model.forward(ids);
            const values = [mean(klDivRows(full, ablated)), sum(crossEntropyRows(ablated, targets, mask))];
            const out = await Promise.all(values.map((v) => v.item()));
            for (const v of [ablated, ...values]) v.dispose();
            return out;
          }));
          kl.set(group.name, (kl.get(group.name) ?? 0) + Math.max(0, k!) / examples.length);
          ce.set(group.name, (ce.get(group.name) ?? 0) + c! / (T - 1) / examples.length);
        }
        for (const t of [ids, targets, mask, full]) t.dispose();
      }
      for (const [batch, lossChunk] of [[1, 1], [4, 3], [16, 100]] as const) {
        const result = await ablationSweep(model, examples, groups, { batch, lossChunk });
        expectClose([result.full_ce], [fullCe / examples.length], { rtol: 1e-5 }, `full CE (batch ${batch}, chunk ${lossChunk})`);
        expect(result.groups.map((g) => g.name)).toEqual(groups.map((g) => g.name));
        expect(Math.max(...result.groups.map((g) => g.kl))).toBeGreaterThan(1e-4); // the ablations move the model
        expectClose(result.groups.map((g) => g.kl), groups.map((g) => kl.get(g.name)!), { rtol: 1e-4, atol: 1e-7 }, `KL (batch ${batch}, chunk ${lossChunk})`);
        expectClose(result.groups.map((g) => g.ce), groups.map((g) => ce.get(g.name)!), { rtol: 1e-5 }, `CE (batch ${batch}, chunk ${lossChunk})`);
      }
      model.dispose();
    });
  }
});
