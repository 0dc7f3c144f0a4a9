// Ablated evaluation (issue 17, Table 2): `rank1 eval --ablate` zero-ablates adapters through the hook runtime,
// `rank1 adapter select` writes a PEFT folder without them, and the two are the same model — identical logits
// and greedy generations on the shipped toy model; module selections and their errors; ablated rows in the
// results file; and `rank1 eval --compare` printing the paper's Table 2.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { keep, tidy } from '../src/tensor/tensor.ts';
import { tensor } from '../src/tensor/ops.ts';
import { Random, randomUniformArray } from '../src/tensor/random.ts';
import { loadPeftAdapter, loadQwen2, savePeftAdapter, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../src/model/load.ts';
import { LoraAdapters, PAPER_LORA, projectionDims } from '../src/model/lora.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { generate, generateBatch } from '../src/model/generate.ts';
import { withHooks } from '../src/model/hook-registry.ts';
import { readSafetensorsHeader, readTensorData } from '../src/model/safetensors.ts';
import { tinyQwen2Config, writeRandomQwen2Checkpoint } from '../src/model/random-model.ts';
import {
  adapterModules, resolveModuleSelection, selectAdapterFolder, selectionLabel, zeroAblationHooks,
} from '../src/model/adapter-select.ts';
import { adapterSelectCommand } from '../src/cli/adapter-command.ts';
import { evalCommand, type EvalCommandOptions } from '../src/cli/eval-command.ts';
import { readResults, type ResultRow } from '../src/eval/results.ts';
import { buildCompareTable, formatCompareTable, parseCompareSpec } from '../src/eval/compare.ts';

const repo = path.resolve(import.meta.dirname, '..');
const backend = getCpuBackend();
let dir: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-ablate-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** A rank-1 adapter on every projection of `model` with random A and B (B ≠ 0, so every adapter changes the output). */
async function writeRandomAdapter(model: Qwen2Model, out: string, seed: number): Promise<void> {
  const { dims } = model;
  const rng = new Random(seed);
  const adapters = LoraAdapters.initialize(dims.layers, projectionDims(dims.hidden, dims.intermediate, dims.heads, dims.kvHeads, dims.headDim), rng, backend, PAPER_LORA);
  for (const [key, { a, b }] of adapters.adapters) {
    const randomB = keep(tensor(randomUniformArray(b.size, rng, -0.02, 0.02), [b.size], { backend }));
    b.dispose();
    adapters.adapters.set(key, { a, b: randomB });
  }
  await savePeftAdapter(out, adapters);
  adapters.dispose();
}

/** Every position's logits of one prompt, as numbers. */
async function logitsOf(model: Qwen2Model, ids: readonly number[]): Promise<Float32Array> {
  const logits = tidy(() => model.forward(tensor(Int32Array.from(ids), [1, ids.length], { backend, dtype: 'i32' })));
  try {
    return await logits.toFloat32Array();
  } finally {
    logits.dispose();
  }
}

// ---- the toy model: ablation and selection are one model ------------------------------------------------

describe('zero-ablation and adapter select give the same model (models/toy)', () => {
  let model: Qwen2Model;
  let adapterDir: string;
  const prompts = [[432, 5, 17, 33, 60, 101, 7, 250, 12, 9], [432, 40, 41, 42, 300, 11]];
  const outputs = async () => ({
    logits: await logitsOf(model, prompts[0]!),
    greedy: (await generate(model, prompts[0]!, { maxTokens: 16 })).ids,
    batched: (await generateBatch(model, prompts, { maxTokens: 12 })).map((r) => r.ids),
  });

  beforeAll(async () => {
    model = await loadQwen2(path.join(repo, 'models/toy'), backend);
    adapterDir = path.join(dir, 'toy-adapter');
    await writeRandomAdapter(model, adapterDir, 3);
  });

  const cases: [string, 'drop' | 'keep', string, string | null][] = [
    // [selection, mode, the ablation that is the same model, expected target_modules (null: not checked)]
    ['mlp', 'drop', 'mlp', 'q_proj,k_proj,v_proj,o_proj'],
    ['attention', 'drop', 'attention', 'gate_proj,up_proj,down_proj'],
    ['attention', 'keep', 'mlp', 'q_proj,k_proj,v_proj,o_proj'],
    ['q_proj, model.layers.2.mlp.down_proj', 'drop', 'q_proj,model.layers.2.mlp.down_proj', null],
  ];
  for (const [selection, mode, ablate, targets] of cases) {
    it(`--${mode} ${selection} equals --ablate ${ablate}: logits and greedy generation, single and batched`, async () => {
      const loaded = await loadPeftAdapter(adapterDir, model);
      const full = await outputs();
      const modules = resolveModuleSelection(ablate, adapterModules(loaded), 'the adapter');
      const ablated = await withHooks(model, zeroAblationHooks(modules), outputs);

      const out = path.join(dir, `toy-${mode}-${ablate.replace(/[^a-z0-9]+/g, '_')}`);
      const result = await selectAdapterFolder(adapterDir, mode, selection, out);
      if (targets !== null) expect(result.targetModules.join()).toBe(targets);
      const selected = await loadPeftAdapter(out, model);
      expect(adapterModules(selected)).toEqual(result.kept);
      const fromFolder = await outputs();

      expect(fromFolder.logits).toEqual(ablated.logits);
      expect(fromFolder.greedy).toEqual(ablated.greedy);
      expect(fromFolder.batched).toEqual(ablated.batched);
      // Not vacuous: removing these adapters changes the model.
      expect(ablated.logits).not.toEqual(full.logits);
    });
  }

  it('a per-layer selection lists module paths in target_modules, which rank1 reads back (and re-saves) exactly', async () => {
    const out = path.join(dir, 'toy-per-layer');
    const result = await selectAdapterFolder(adapterDir, 'drop', 'model.layers.1.self_attn.q_proj,up_proj', out);
    expect(result.dropped).toEqual(['model.layers.0.mlp.up_proj', 'model.layers.1.mlp.up_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.2.mlp.up_proj', 'model.layers.3.mlp.up_proj']);
    expect(result.targetModules).toEqual([
      'gate_proj', 'down_proj',
      'model.layers.0.self_attn.q_proj', 'model.layers.2.self_attn.q_proj', 'model.layers.3.self_attn.q_proj',
      'k_proj', 'v_proj', 'o_proj',
    ]);
    const config = JSON.parse(await fs.readFile(path.join(out, ADAPTER_CONFIG_FILE), 'utf8'));
    const source = JSON.parse(await fs.readFile(path.join(adapterDir, ADAPTER_CONFIG_FILE), 'utf8'));
    expect(config).toEqual({ ...source, target_modules: result.targetModules });
    // The kept tensors are the source's, byte for byte.
    const [from, to] = await Promise.all([adapterDir, out].map((d) => readSafetensorsHeader(path.join(d, ADAPTER_WEIGHTS_FILE))));
    expect(to!.tensors.size).toBe(from!.tensors.size - 2 * result.dropped.length);
    for (const entry of to!.tensors.values()) {
      expect(await readTensorData(entry.file, entry)).toEqual(await readTensorData(from!.tensors.get(entry.name)!.file, from!.tensors.get(entry.name)!));
    }
    // rank1 reads it (only the kept modules) and writes the same target_modules back.
    const loaded = await loadPeftAdapter(out, model);
    expect(adapterModules(loaded)).toEqual(result.kept);
    const resaved = path.join(dir, 'toy-per-layer-resaved');
    await savePeftAdapter(resaved, loaded);
    expect(JSON.parse(await fs.readFile(path.join(resaved, ADAPTER_CONFIG_FILE), 'utf8')).target_modules).toEqual(result.targetModules);
    expect(adapterModules(await loadPeftAdapter(resaved, model))).toEqual(result.kept);
  });

  it('rejects bad selections, naming the item and listing what the adapter has', async () => {
    const out = path.join(dir, 'toy-bad');
    await expect(selectAdapterFolder(adapterDir, 'drop', 'mlp,lm_head', out)).rejects.toThrow(
      /unknown module "lm_head": expected mlp, attention, .*; adapter .*toy-adapter has gate_proj in layers 0–3; .*o_proj in layers 0–3/);
    await expect(selectAdapterFolder(adapterDir, 'drop', 'model.layers.7.self_attn.q_proj', out)).rejects.toThrow(
      /"model\.layers\.7\.self_attn\.q_proj": adapter .* has no adapter at model\.layers\.7\.self_attn\.q_proj; .* has gate_proj in layers 0–3/);
    await expect(selectAdapterFolder(adapterDir, 'drop', 'model.layers.1.mlp.q_proj', out)).rejects.toThrow(/unknown module "model\.layers\.1\.mlp\.q_proj"/);
    await expect(selectAdapterFolder(adapterDir, 'drop', ' , ', out)).rejects.toThrow(/empty module selection/);
    await expect(selectAdapterFolder(adapterDir, 'drop', 'mlp,attention', out)).rejects.toThrow(/leaves no adapters of .*: that is the base model/);
    await expect(selectAdapterFolder(adapterDir, 'keep', 'mlp', adapterDir)).rejects.toThrow(/is the adapter folder itself/);
    await expect(selectAdapterFolder(path.join(dir, 'nowhere'), 'keep', 'mlp', out)).rejects.toThrow(/cannot read .*nowhere.*adapter_config\.json/);
    // An adapter that has only attention adapters has nothing called mlp.
    const attentionOnly = path.join(dir, 'toy-attention-only');
    await selectAdapterFolder(adapterDir, 'keep', 'attention', attentionOnly);
    await expect(selectAdapterFolder(attentionOnly, 'drop', 'mlp', out)).rejects.toThrow(/"mlp": adapter .* has no MLP adapters \(it has q_proj in layers 0–3; k_proj/);
    await expect(selectAdapterFolder(attentionOnly, 'drop', 'up_proj', out)).rejects.toThrow(/"up_proj": adapter .* has no up_proj adapters/);
    // The command wants exactly one of --drop and --keep.
    await expect(adapterSelectCommand({ adapter: adapterDir, out })).rejects.toThrow(/exactly one of --drop and --keep/);
    await expect(adapterSelectCommand({ adapter: adapterDir, drop: 'mlp', keep: 'attention', out })).rejects.toThrow(/exactly one of --drop and --keep/);
  });
});

describe('module selections', () => {
  const available = [0, 1].flatMap((l) => ['mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj'].map((p) => `model.layers.${l}.${p}`));

  it('resolves groups, projections and module paths in the paper\'s order, without repeats', () => {
    expect(resolveModuleSelection('mlp', available, 'x')).toEqual(available.filter((m) => m.includes('.mlp.')));
    expect(resolveModuleSelection('attention', available, 'x')).toEqual(available.filter((m) => m.includes('.self_attn.')));
    expect(resolveModuleSelection('model.layers.1.mlp.up_proj,q_proj,base_model.model.model.layers.0.self_attn.q_proj', available, 'x'))
      .toEqual(['model.layers.0.self_attn.q_proj', 'model.layers.1.mlp.up_proj', 'model.layers.1.self_attn.q_proj']);
  });

  it('labels a selection by its shortest name', () => {
    const label = (spec: string) => selectionLabel(resolveModuleSelection(spec, available, 'x'), available);
    expect(label('gate_proj,up_proj,down_proj')).toBe('mlp');
    expect(label('attention')).toBe('attention');
    expect(label('q_proj,model.layers.1.mlp.up_proj')).toBe('model.layers.1.mlp.up_proj,q_proj');
    expect(label('model.layers.0.self_attn.q_proj,model.layers.1.self_attn.q_proj')).toBe('q_proj');
  });
});

// ---- rank1 eval --ablate -------------------------------------------------------------------------------

/** Runs the command action, returning what it wrote to stdout and stderr. */
async function runEvalCommand(options: EvalCommandOptions): Promise<{ stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
  try {
    await evalCommand(options);
  } finally {
    vi.restoreAllMocks();
  }
  return { stdout, stderr };
}

describe('rank1 eval --ablate', () => {
  const fixtures = path.join(repo, 'test/fixtures/eval');
  let modelDir: string;
  let adapterDir: string;
  const options = (out: string, extra: Partial<EvalCommandOptions> = {}): EvalCommandOptions => ({
    model: modelDir, adapter: adapterDir, tokenizer: path.join(fixtures, 'char-tokenizer'), bench: 'math500',
    data: path.join(fixtures, 'math-sample.jsonl'), out, maxTokens: 4, limit: 3, batch: 2, backend: 'cpu', ...extra,
  });

  beforeAll(async () => {
    modelDir = path.join(dir, 'tiny-model');
    adapterDir = path.join(dir, 'tiny-adapter');
    await writeRandomQwen2Checkpoint(modelDir, tinyQwen2Config({ vocabSize: 128 }), 7, backend);
    await writeRandomAdapter(await loadQwen2(modelDir, backend), adapterDir, 5);
  });

  it('records the ablation in every row and in the summary, and refuses to resume another ablation into the file', async () => {
    const out = path.join(dir, 'eval', 'mlp.jsonl');
    const { stdout, stderr } = await runEvalCommand(options(out, { ablate: 'gate_proj,down_proj,up_proj' }));
    expect(stderr).toMatch(/ablated: mlp \(6 of 14 adapters zero-ablated for the whole generation\)/);
    expect(JSON.parse(stdout)).toMatchObject({ n: 3, ablated: 'mlp' });
    const { rows } = await readResults(out);
    expect(rows.map((r) => r.ablated)).toEqual(['mlp', 'mlp', 'mlp']);
    await expect(runEvalCommand(options(out, { ablate: 'attention' }))).rejects.toThrow(/mlp\.jsonl: holds results of --ablate mlp \(problem 0\), but this run is --ablate attention: use another --out/);
    await expect(runEvalCommand(options(out, { ablate: undefined }))).rejects.toThrow(/holds results of --ablate mlp .* but this run is no ablation/);
  });

  it('rejects --ablate without --adapter, unknown modules and --ablate beside --compare', async () => {
    const out = path.join(dir, 'eval', 'bad.jsonl');
    await expect(runEvalCommand(options(out, { adapter: undefined, ablate: 'mlp' }))).rejects.toThrow(/--ablate removes adapters of --adapter: pass the adapter folder too/);
    await expect(runEvalCommand(options(out, { ablate: 'mlp,feed_forward' }))).rejects.toThrow(/unknown module "feed_forward": .*tiny-adapter has gate_proj in layers 0–1/);
    await expect(runEvalCommand(options(out, { ablate: 'model.layers.5.mlp.up_proj' }))).rejects.toThrow(/has no adapter at model\.layers\.5\.mlp\.up_proj/);
    await expect(runEvalCommand({ compare: ['base=a.jsonl'], ablate: 'mlp' })).rejects.toThrow(/drop --ablate/);
  });
});

// ---- rank1 eval --compare: Table 2 ------------------------------------------------------------------------

/** A results file with `correct` right answers out of `n`, its rows recording `ablated`. */
async function resultsFile(name: string, bench: 'aime24' | 'math500', n: number, correct: number, ablated?: string): Promise<string> {
  const file = path.join(dir, 'table2', name);
  await fs.mkdir(path.dirname(file), { recursive: true });
  const rows: ResultRow[] = Array.from({ length: n }, (_, index) => ({
    bench, index, id: String(index), problem: `problem ${index}`, gold: '1', extracted: index < correct ? '1' : '2', correct: index < correct,
    tokensGenerated: 10, stopReason: 'stop_id', seconds: 1, ...(ablated ? { ablated } : {}),
  }));
  await fs.writeFile(file, rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return file;
}

describe('rank1 eval --compare with ablated runs (Table 2)', () => {
  it('prints Table 2 below Table 1: each ablated accuracy as (x − b) / (ℓ − b)', async () => {
    // AIME24: b 3/30, ℓ 9/30, full 12/30; MLP removed 6/30 → 50%, attention removed 9/30 → 100%.
    // MATH500: b = ℓ = 100/500: no gain, Table 2 undefined there (said so, not NaN).
    const aime = `base=${await resultsFile('a-base.jsonl', 'aime24', 30, 3)},lora=${await resultsFile('a-lora.jsonl', 'aime24', 30, 9)},full=${await resultsFile('a-full.jsonl', 'aime24', 30, 12)}`
      + `,mlp_ablated=${await resultsFile('a-mlp.jsonl', 'aime24', 30, 6, 'mlp')},attn_ablated=${await resultsFile('a-attn.jsonl', 'aime24', 30, 9, 'attention')}`;
    const math = `base=${await resultsFile('m-base.jsonl', 'math500', 500, 100)},lora=${await resultsFile('m-lora.jsonl', 'math500', 500, 100)}`
      + `,mlp_ablated=${await resultsFile('m-mlp.jsonl', 'math500', 500, 90, 'mlp')}`;
    const table = await buildCompareTable([parseCompareSpec(math), parseCompareSpec(aime)]);
    expect(formatCompareTable(table)).toBe([
      '               AIME24  MATH500',
      'Base             10.0     20.0',
      'Rank-1 LoRA      30.0     20.0',
      'Full finetune    40.0      n/a',
      '% recovery       66.7      n/a',
      '',
      'Table 2: adapters removed from the rank-1 LoRA  AIME24  MATH500',
      'MLP adapters removed: accuracy                    20.0     18.0',
      'MLP adapters removed: % of gain kept              50.0      n/a',
      'Attention adapters removed: accuracy              30.0      n/a',
      'Attention adapters removed: % of gain kept       100.0      n/a',
      '  % of gain kept = (x − b) / (ℓ − b): x the ablated accuracy, b the base\'s, ℓ the rank-1 LoRA\'s',
      '  MATH500: undefined — the rank-1 accuracy equals the base\'s (ℓ = b = 20.0%), so there is no gain to keep',
      '',
    ].join('\n'));
    const json = JSON.parse(JSON.stringify(table));
    expect(json.table2.recovery.mlp_ablated.aime24).toBeCloseTo(50, 10);
    expect(json.table2.recovery.attn_ablated.aime24).toBeCloseTo(100, 10);
    expect(json.table2.recovery.mlp_ablated.math500).toBeNull();
    expect(json.cells.mlp_ablated.aime24).toMatchObject({ n: 30, correct: 6 });
    // Without ablated runs there is no Table 2.
    expect((await buildCompareTable([parseCompareSpec(`base=${await resultsFile('a-base.jsonl', 'aime24', 30, 3)}`)])).table2).toBeUndefined();
  });

  it('says Table 2 needs the base and lora runs', async () => {
    const table = await buildCompareTable([parseCompareSpec(`mlp_ablated=${await resultsFile('n-mlp.jsonl', 'aime24', 30, 6, 'mlp')}`)]);
    expect(table.table2!.recovery.mlp_ablated.aime24).toBeNull();
    expect(formatCompareTable(table)).toMatch(/AIME24: Table 2 needs the base and lora runs/);
  });

  it('rejects a file that is not what its role claims, files of another benchmark, and missing files', async () => {
    const base = await resultsFile('x-base.jsonl', 'aime24', 30, 3);
    const lora = await resultsFile('x-lora.jsonl', 'aime24', 30, 9);
    const mlp = await resultsFile('x-mlp.jsonl', 'aime24', 30, 6, 'mlp');
    const partial = await resultsFile('x-q.jsonl', 'aime24', 30, 6, 'q_proj');
    const spec = (extra: string) => [parseCompareSpec(`base=${base},lora=${lora},${extra}`)];
    await expect(buildCompareTable(spec(`attn_ablated=${mlp}`))).rejects.toThrow(/x-mlp\.jsonl: given as attn_ablated, which needs rows evaluated with --ablate attention, but its rows record --ablate mlp \(problem 0\)/);
    await expect(buildCompareTable(spec(`mlp_ablated=${partial}`))).rejects.toThrow(/x-q\.jsonl: given as mlp_ablated, .* record --ablate q_proj/);
    await expect(buildCompareTable(spec(`mlp_ablated=${lora}`))).rejects.toThrow(/x-lora\.jsonl: given as mlp_ablated, .* record no ablation \(a run without --ablate\)/);
    await expect(buildCompareTable([parseCompareSpec(`base=${base},lora=${mlp}`)])).rejects.toThrow(/x-mlp\.jsonl: given as lora, which needs a run without --ablate, but its rows record --ablate mlp/);
    const mathMlp = await resultsFile('x-math-mlp.jsonl', 'math500', 10, 2, 'mlp');
    await expect(buildCompareTable(spec(`mlp_ablated=${mathMlp}`))).rejects.toThrow(/x-math-mlp\.jsonl: holds math500 results, but the comparison is for aime24/);
    await expect(buildCompareTable(spec(`mlp_ablated=${path.join(dir, 'table2', 'absent.jsonl')}`))).rejects.toThrow(/absent\.jsonl: no results \(missing or empty file\)/);
    expect(() => parseCompareSpec('base=a,mlp=b')).toThrow(/unknown role "mlp" \(one of base, lora, full, mlp_ablated, attn_ablated\)/);
  });
});
