// Qwen2 parity against PyTorch: the tiny checkpoints in test/fixtures/qwen2 (made by
// scripts/make_qwen2_fixtures.py, a float64 PyTorch re-implementation of Hugging Face's modeling_qwen2.py and
// PEFT's LoRA) are loaded with loadQwen2 / loadPeftAdapter, and rank1's logits, adapter activations A·x,
// zero-ablated logits, ablation KL and greedy continuations (KV cache) must match the fixture. The fixture is
// plain JSON and safetensors, so this test never needs torch.
//
// Coverage by folder: tiny-f32 (f32, untied lm_head, GQA 4/2), tiny-bf16-tied (bf16 weights, tied
// embeddings, GQA 7/1), tiny-sharded (two shards + index), tiny-f32 + adapter-tiny-f32 (rsLoRA r 1, all 14
// adapters). Every case runs on the CPU backend, and on WebGPU when it is available.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../src/kernels/backend.ts';
import { argmax, generate } from '../src/model/generate.ts';
import { adapterHookNames } from '../src/model/hooks.ts';
import { HookRecorder, withHooks, zeroAblate } from '../src/model/hook-registry.ts';
import { loadPeftAdapter, loadQwen2 } from '../src/model/load.ts';
import { KVCache, type ForwardOptions, type Qwen2Model } from '../src/model/qwen2.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import * as ops from '../src/tensor/ops.ts';
import type { Tensor } from '../src/tensor/tensor.ts';

// ---- fixture format (see scripts/make_qwen2_fixtures.py) ---------------------------------------------

interface AblationExpectation {
  /** Adapter hook names zero-ablated together. */
  hooks: string[];
  /** [B, T, V] flat. */
  logits: number[];
  /** [B]: mean over positions of KL(softmax full ‖ softmax ablated). */
  klMeanOverPositions: number[];
}

interface ParityCase {
  name: string;
  /** [B][T]. */
  ids: number[][];
  logitsShape: [number, number, number];
  /** [B, T, V] flat. */
  logits: number[];
  /** Adapter case only: hook name -> A·x [B, T] flat. */
  activations?: Record<string, number[]>;
  ablation?: AblationExpectation;
}

interface GreedyExpectation {
  /** [B][P]. */
  prompt: number[][];
  /** [B][N]: argmax at each step. */
  newIds: number[][];
  /** [N, B, V]: the last-position logits that chose each new id. */
  stepLogitsShape: [number, number, number];
  stepLogits: number[];
}

interface ModelExpectation {
  dir: string;
  adapter?: string;
  loraScale?: number;
  cases: ParityCase[];
  greedy: GreedyExpectation;
}

interface ExpectedFile {
  models: Record<string, ModelExpectation>;
}

const FIXTURES = fileURLToPath(new URL('./fixtures/qwen2/', import.meta.url));
const expected = JSON.parse(readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as ExpectedFile;

// The reference is float64; rank1 computes in f32 (and the fixture rounds to 7 significant digits).
const LOGIT_TOLERANCE = 1e-3;
const ACTIVATION_TOLERANCE = 1e-4;
const KL_TOLERANCE = 1e-5;
// Cached and recomputed logits are both rank1 f32: they differ only by summation order.
const CACHE_TOLERANCE = 1e-4;

// ---- helpers ------------------------------------------------------------------------------------------

/** max |actual − expected| with where it happens, for a failure message that points at the element. */
function expectClose(actual: ArrayLike<number>, wanted: ArrayLike<number>, tolerance: number, what: string): void {
  expect(actual.length, `${what}: length`).toBe(wanted.length);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < wanted.length; i++) {
    const diff = Math.abs(actual[i]! - wanted[i]!);
    if (!(diff <= worst)) {
      worst = diff; // NaN also lands here and fails below
      at = i;
    }
  }
  expect(worst, `${what}: max |Δ| = ${worst} at flat index ${at} (got ${actual[at]}, expected ${wanted[at]})`).toBeLessThanOrEqual(tolerance);
}

/** model.forward on ids [B][T] (uploaded as i32 [B, T] and freed afterwards). */
function forwardIds(model: Qwen2Model, ids: readonly (readonly number[])[], options?: ForwardOptions): Tensor {
  const t = ops.tensor(Int32Array.from(ids.flat()), [ids.length, ids[0]!.length], { backend: model.backend });
  try {
    return model.forward(t, options);
  } finally {
    t.dispose();
  }
}

/** Runs fn, reads its result to the host as f32 and frees it. */
async function readAndFree(fn: () => Tensor): Promise<Float32Array> {
  const t = fn();
  try {
    return await t.toFloat32Array();
  } finally {
    t.dispose();
  }
}

async function loadFixture(entry: ModelExpectation, backend: Backend): Promise<Qwen2Model> {
  const model = await loadQwen2(path.join(FIXTURES, entry.dir), backend);
  if (entry.adapter) await loadPeftAdapter(path.join(FIXTURES, entry.adapter), model);
  return model;
}

// ---- backends -----------------------------------------------------------------------------------------

interface BackendUnderTest {
  name: string;
  backend: Backend | null;
  /** Why the backend is skipped, when it is. */
  reason?: string;
}

/**
 * WebGPU when test/webgpu-helpers.ts exists (the WebGPU test suite is set up) and an adapter answers, and
 * the backend runs a whole Qwen2 forward (kernels still missing are reported as the skip reason).
 */
async function webgpuUnderTest(): Promise<BackendUnderTest> {
  const name = 'webgpu';
  if (!existsSync(fileURLToPath(new URL('./webgpu-helpers.ts', import.meta.url)))) {
    return { name, backend: null, reason: 'test/webgpu-helpers.ts does not exist yet' };
  }
  const { probeWebGpu } = await import('../src/kernels/webgpu/index.ts');
  const probe = await probeWebGpu();
  if (!('backend' in probe)) return { name, backend: null, reason: probe.reason };
  const backend = probe.backend;
  try {
    const model = await loadQwen2(path.join(FIXTURES, 'tiny-f32'), backend);
    try {
      await readAndFree(() => forwardIds(model, [[1, 2]]));
    } finally {
      model.dispose();
    }
  } catch (error) {
    const message = (error as Error).message;
    if (!/not implemented/.test(message)) throw error;
    backend.destroy();
    return { name, backend: null, reason: `${backend.description} cannot run Qwen2 yet: ${message}` };
  }
  return { name, backend };
}

const backends: BackendUnderTest[] = [{ name: 'cpu', backend: getCpuBackend() }, await webgpuUnderTest()];
for (const { name, reason } of backends) if (reason) console.log(`qwen2-parity: skipping ${name}: ${reason}`);

afterAll(() => {
  for (const { backend } of backends) if (backend && 'destroy' in backend) (backend as { destroy(): void }).destroy();
});

// ---- the parity suite, once per backend ---------------------------------------------------------------

for (const under of backends) {
  describe.skipIf(!under.backend)(`Qwen2 parity with PyTorch (${under.name})`, () => {
    const backend = under.backend!;

    for (const [label, entry] of Object.entries(expected.models)) {
      describe(label, () => {
        let model: Qwen2Model;
        beforeAll(async () => {
          model = await loadFixture(entry, backend);
        });
        afterAll(() => model?.dispose());

        it('loads with the fixture config (and the adapter, when there is one)', () => {
          const first = entry.cases[0]!;
          expect(model.dims.vocab).toBe(first.logitsShape[2]);
          if (entry.adapter) {
            expect(model.adapters).not.toBeNull();
            expect(model.adapters!.adapters.size).toBe(7 * model.dims.layers);
            expect(model.adapters!.scale).toBe(entry.loraScale);
          } else {
            expect(model.adapters).toBeNull();
          }
        });

        for (const c of entry.cases) {
          const [B, T] = c.logitsShape;
          it(`logits for ids [${B}, ${T}] (${c.name})`, async () => {
            const logits = await readAndFree(() => forwardIds(model, c.ids));
            expectClose(logits, c.logits, LOGIT_TOLERANCE, `${label} ${c.name} logits`);
          });

          if (c.activations) {
            const activations = c.activations;
            it(`adapter activations A·x for ids [${B}, ${T}] (${c.name})`, async () => {
              const names = adapterHookNames(model.dims.layers);
              expect(Object.keys(activations).sort()).toEqual([...names].sort());
              const recorder = new HookRecorder();
              try {
                const spec = Object.fromEntries(names.map((n) => [n, recorder.hook]));
                withHooks(model, spec, () => forwardIds(model, c.ids)).dispose();
                expect(model.hooks.size).toBe(0);
                expect(recorder.names.sort()).toEqual([...names].sort());
                for (const name of names) {
                  const recorded = recorder.get(name);
                  expect(recorded.shape, name).toEqual([B, T]);
                  expectClose(await recorded.toFloat32Array(), activations[name]!, ACTIVATION_TOLERANCE, `${label} ${c.name} ${name}`);
                }
              } finally {
                recorder.dispose();
              }
            });
          }

          if (c.ablation) {
            const ablation = c.ablation;
            it(`zero-ablating ${ablation.hooks.join(' + ')}: logits and KL (${c.name})`, async () => {
              const spec = Object.fromEntries(ablation.hooks.map((n) => [n, zeroAblate]));
              const full = forwardIds(model, c.ids);
              const ablated = withHooks(model, spec, () => forwardIds(model, c.ids));
              try {
                expect(model.hooks.size).toBe(0);
                expectClose(await ablated.toFloat32Array(), ablation.logits, LOGIT_TOLERANCE, `${label} ${c.name} ablated logits`);
                const kl = await readAndFree(() => ops.mean(ops.klDivRows(full, ablated), 1)); // [B, T] -> [B]
                expectClose(kl, ablation.klMeanOverPositions, KL_TOLERANCE, `${label} ${c.name} KL(full ‖ ablated)`);
              } finally {
                full.dispose();
                ablated.dispose();
              }
            });
          }
        }

        const greedy = entry.greedy;
        const [steps, batch, vocab] = greedy.stepLogitsShape;
        it(`greedy ${steps} tokens with a KV cache: expected ids, and cache ≡ recompute at every step`, async () => {
          // A small initial capacity makes the cache grow (copying what it holds) during the prompt and again
          // mid-generation.
          const cache = new KVCache(model.dims, batch, backend, 4);
          const sequences = greedy.prompt.map((row) => [...row]);
          const chosen: number[][] = greedy.prompt.map(() => []);
          try {
            let input = greedy.prompt;
            for (let step = 0; step < steps; step++) {
              const cached = await readAndFree(() => forwardIds(model, input, { cache, lastPositionOnly: true }));
              expect(cache.length).toBe(sequences[0]!.length);
              const wanted = greedy.stepLogits.slice(step * batch * vocab, (step + 1) * batch * vocab);
              expectClose(cached, wanted, LOGIT_TOLERANCE, `${label} greedy step ${step} cached logits`);
              const recomputed = await readAndFree(() => forwardIds(model, sequences, { lastPositionOnly: true }));
              expectClose(cached, recomputed, CACHE_TOLERANCE, `${label} greedy step ${step}: KV cache vs recompute`);
              const next = sequences.map((_, b) => argmax(cached.subarray(b * vocab, (b + 1) * vocab)));
              next.forEach((id, b) => {
                chosen[b]!.push(id);
                sequences[b]!.push(id);
              });
              input = next.map((id) => [id]);
            }
          } finally {
            cache.dispose();
          }
          expect(chosen).toEqual(greedy.newIds);
        });

        it('generate() (greedy, one prompt at a time) continues each prompt with the expected ids', async () => {
          for (let b = 0; b < batch; b++) {
            const result = await generate(model, greedy.prompt[b]!, { maxTokens: steps });
            expect(result.ids, `prompt ${b}`).toEqual(greedy.newIds[b]);
          }
        });
      });
    }
  });
}
