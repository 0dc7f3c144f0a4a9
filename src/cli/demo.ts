// `rank1 demo`: the paper's pipeline end to end on a model small enough to watch, with nothing downloaded.
// A random Qwen2 (bf16 weights, as real checkpoints store them) gets rank-1 LoRA adapters on all seven
// projections of every layer, trained with the paper's optimiser settings on a synthetic next-token task;
// then each adapter is zero-ablated and ranked by KL(full ‖ ablated), the paper's ablation metric.
import type { Backend } from '../kernels/backend.ts';
import { klDivRows, mean, tensor } from '../tensor/ops.ts';
import { noGrad } from '../tensor/autograd.ts';
import { tidy } from '../tensor/tensor.ts';
import { adapterHookNames, withHooks, zeroAblate } from '../model/hooks.ts';
import { randomQwen2Model, tinyQwen2Config } from '../model/random-model.ts';
import { makeBatch, syntheticRows, tokenizeRows } from '../train/data.ts';
import { PAPER_TRAINING, meanBatchLoss, train } from '../train/trainer.ts';

export interface DemoOptions {
  backend: Backend;
  outDir: string;
  epochs: number;
  seed: number;
  log: (line: string) => void;
}

export interface DemoResult {
  lossBefore: number;
  lossAfter: number;
  /** Adapters by decreasing ablation KL. */
  ablations: { name: string; kl: number }[];
}

export async function runDemo({ backend, outDir, epochs, seed, log }: DemoOptions): Promise<DemoResult> {
  const vocab = 64;
  const config = tinyQwen2Config({ hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 3, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, vocabSize: vocab, torchDtype: 'bfloat16' });
  const model = randomQwen2Model(config, seed, backend, 'bf16');
  const train64 = tokenizeRows(syntheticRows(96, seed + 1, { vocabSize: vocab }), null);
  const heldOut = makeBatch(tokenizeRows(syntheticRows(16, seed + 2, { vocabSize: vocab }), null), 0);
  log(`model: random Qwen2, ${config.numHiddenLayers} layers, hidden ${config.hiddenSize}, ${model.parameterCount.toLocaleString('en-US')} frozen bf16 weights`);
  log(`task: synthetic sequences where each token follows from the last (10% noise); ${train64.length} training rows, 16 held out`);

  const lossBefore = await meanBatchLoss(model, heldOut);
  log(`held-out loss before training: ${lossBefore.toFixed(4)}`);
  const result = await train(model, train64, {
    ...PAPER_TRAINING, epochs, batchSize: 16, microBatch: 8, lr: 1e-2, seed, saveEvery: 1000, keepCheckpoints: 1,
  }, {
    outDir,
    log,
    onStep: (m, total) => {
      if (m.step === 1 || m.step % 6 === 0 || m.step === total) log(`  step ${String(m.step).padStart(3)}/${total}  loss ${m.loss.toFixed(4)}  lr ${m.lr.toExponential(2)}`);
    },
  });
  const lossAfter = await meanBatchLoss(model, heldOut);
  log(`held-out loss after ${result.steps} steps: ${lossAfter.toFixed(4)} (adapter: ${model.adapters!.adapters.size} rank-1 adapters, ${model.adapters!.parameterCount} scalars, saved as a PEFT folder in ${outDir})`);

  // The paper's ablation metric: KL(full ‖ ablated), mean over positions, then over sequences.
  const ids = tensor(heldOut.ids, [heldOut.batch, heldOut.seqLen], { backend, dtype: 'i32' });
  const full = noGrad(() => model.forward(ids));
  const ablations: { name: string; kl: number }[] = [];
  for (const name of adapterHookNames(config.numHiddenLayers)) {
    const kl = await noGrad(() => tidy(() => {
      const ablated = withHooks(model, { [name]: zeroAblate }, () => model.forward(ids));
      return mean(mean(klDivRows(full, ablated), -1));
    })).item();
    ablations.push({ name, kl });
  }
  full.dispose();
  ids.dispose();
  ablations.sort((a, b) => b.kl - a.kl);
  log('adapters whose ablation moves the output most (KL(full ‖ ablated), nats/token):');
  for (const { name, kl } of ablations.slice(0, 5)) log(`  ${name.padEnd(34)} ${kl.toExponential(3)}`);
  log(`next: the same on a real checkpoint: rank1 train --model <Qwen2 folder> --data s1K-1.1.parquet --out <dir>`);
  model.dispose();
  return { lossBefore, lossAfter, ablations };
}
