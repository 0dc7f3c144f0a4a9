// `rank1 demo`: the paper end to end on the toy world, in this process, from the shipped base (models/toy):
//
//   world        the base's own world, remade from its world.json (hashes checked): traces and held-out problems
//   train        rank-1 adapters on all 7 projections of every layer, then a full finetune, on the same traces
//   eval         base, rank 1 and full on the held-out problems (s1's think prompt, greedy) → Table 1, % recovery
//   ablate       zero-ablation sweep of the rank-1 adapter: Figure 1 (7 × L heat map), KL by layer, Table 2
//   extract      every adapter activation A·x of the traces into an activation store (+ MLP neurons)
//   topk         max-activating examples of every adapter direction (both polarities) and MLP neuron
//   sae          a BatchTopK SAE over the adapter state, then each latent's max-activating examples
//   autointerp   an LLM labels every feature, when an endpoint is given (else a line saying how)
//   report       report.html: the numbers, the figures (embedded) and links to every file
//
// Everything lands in one folder; --seed fixes the adapter initialisation, the data order of both trainings,
// the ablation draw and the SAE, so the same seed gives the same numbers (on the same backend).
import * as fs from 'node:fs/promises';
import { appendFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Backend } from '../kernels/backend.ts';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE, findChatTemplate, loadChatTemplate } from '../model/chat-template.ts';
import { copyCompanionFiles, writeCheckpoint } from '../model/checkpoint.ts';
import { loadPeftAdapter, loadQwen2Checkpoint, modelTensors } from '../model/load.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer.ts';
import { DEFAULT_BLOCK_SIZE, iterateTrainingRows, loadTrainingRows, tokenizeRows } from '../train/data.ts';
import type { TokenizedExample } from '../train/data-rows.ts';
import { PAPER_TRAINING, train, type TrainSettings } from '../train/trainer.ts';
import { loadBenchmark, type EvalProblem } from '../eval/benchmarks.ts';
import { buildCompareTable, formatCompareTable, type CompareTable } from '../eval/compare.ts';
import { modelBatchCompleter, modelCompleter, runEval } from '../eval/run.ts';
import type { ResultsSummary } from '../eval/results.ts';
import { makeWorld, worldOptionsFromManifest, WORLD_FILES, type WorldManifest } from '../world/make.ts';
import { ablationGroups, ablationSweep, chooseExamples, type AblationExample, type AblationResult } from '../interp/ablate.ts';
import { writeAblationOutputs } from '../interp/figures.ts';
import { ActivationStore, type StoreIndex } from '../interp/activation-store.ts';
import { EXTRACT_DEFAULTS, extractActivations, extractionIds } from '../interp/extract.ts';
import { topActivations, type FeatureTopExamples } from '../interp/topk.ts';
import { defaultSaeConfig } from '../interp/sae.ts';
import { storeSource } from '../interp/sae-data.ts';
import { readSaeFolder } from '../interp/sae-folder.ts';
import { trainSae, type SaeMetrics } from '../interp/sae-train.ts';
import { saeFeatures, type SaeFeature } from '../interp/sae-features.ts';
import { interpretFeatures } from '../interp/autointerp.ts';
import { loadPrompts } from '../interp/autointerp-prompts.ts';
import { readFeatureFiles, writeFeaturesJsonl } from '../interp/features-file.ts';
import { CachedChatClient } from '../interp/llm-client.ts';
import { writeInterpretFigures } from '../interp/autointerp-figures.ts';
import { buildDashboard } from '../dashboard/build.ts';
import { DemoProgress, type StepTiming } from './progress.ts';
import { writeReport } from './report.ts';
import type { DemoSizes } from './settings.ts';

/** The shipped toy base. */
export const TOY_BASE = path.resolve(import.meta.dirname, '../../models/toy');

/** What `rank1 demo` writes into its folder (and removes from it before a rerun). */
export const DEMO_FILES = {
  manifest: 'demo.json',
  log: 'demo.log',
  world: 'world',
  lora: 'lora',
  full: 'full',
  eval: 'eval',
  table1: 'table1.json',
  ablation: 'ablation',
  store: 'store',
  storeTraces: 'store-traces.jsonl',
  topk: 'topk',
  sae: 'sae',
  saeFeatures: 'sae-features',
  interpret: 'interpret',
  dashboard: 'dashboard',
  report: 'report.html',
} as const;

export const DEMO_STEPS = [
  'world', 'train rank 1', 'train full', 'eval base', 'eval rank 1', 'eval full', 'table 1',
  'ablate', 'extract', 'topk', 'sae train', 'sae features', 'autointerp', 'dashboard', 'report',
] as const;

export interface DemoEndpoint {
  /** OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1. */
  url: string;
  /** Model name sent to the endpoint. */
  model: string;
  apiKey?: string;
}

export interface DemoOptions {
  out: string;
  sizes: DemoSizes;
  mode: 'default' | 'quick';
  seed: number;
  backend: Backend;
  /** Why this backend (initBackend's reason). */
  backendReason: string;
  /** The base model folder (default: the shipped toy base). */
  base?: string;
  endpoint?: DemoEndpoint;
  /** Where the step lines (and, on a terminal, the bar) go; default stderr. */
  progress?: DemoProgress;
}

export interface Table1Row extends ResultsSummary {
  /** Results JSONL, relative to the demo folder. */
  file: string;
}

/** table1.json: Table 1 on the toy world's held-out problems. */
export interface Table1 {
  bench: 'toy';
  problems: number;
  base: Table1Row;
  lora: Table1Row;
  full: Table1Row;
  /** 100 · (lora − base) / (full − base); null when full == base. */
  recovery_percent: number | null;
  /** The same table as `rank1 eval --compare --json` prints it. */
  compare: CompareTable;
}

/** demo.json: what ran, how long each step took, and the headline numbers. */
export interface DemoSummary {
  format: 'rank1-demo';
  version: 1;
  status: 'running' | 'complete';
  date: string;
  mode: 'default' | 'quick';
  seed: number;
  backend: { name: string; reason: string };
  machine: { cpu: string | undefined; cores: number; memoryGiB: number; node: string; platform: string };
  base: string;
  sizes: DemoSizes;
  world: { seed: number; version: number; reasoningRows: number; heldoutProblems: number } | null;
  training: { lora: { steps: number; finalLoss: number | null }; full: { steps: number; finalLoss: number | null } } | null;
  table1: Table1 | null;
  ablation: { examples: number; tokens: number; fullCe: number; mlp: number; attention: number; all: number; topAdapters: { name: string; kl: number }[] } | null;
  store: { examples: number; tokens: number; hooks: number; mlpNeurons: number } | null;
  topk: { features: number; active: number } | null;
  sae: (SaeMetrics & { latentsFiring: number }) | null;
  autointerp: { explained: number; features: number; categories: number; errors: number } | null;
  timings: StepTiming[];
  totalSeconds: number;
}

/** Raised for a demo folder that cannot be used; names --out. */
export class DemoFolderError extends Error {}

/**
 * Checks the output folder: missing, empty, or an earlier demo's (its demo.json) — whose outputs are then
 * removed (the autointerp response cache is kept, so a rerun does not pay twice). Anything else is refused.
 */
export async function prepareDemoFolder(out: string): Promise<void> {
  const stat = await fs.stat(out).catch(() => null);
  if (stat && !stat.isDirectory()) throw new DemoFolderError(`--out ${out} is a file, not a folder`);
  if (stat) {
    const entries = await fs.readdir(out);
    if (entries.length > 0) {
      const manifest = await fs.readFile(path.join(out, DEMO_FILES.manifest), 'utf8').then((t) => JSON.parse(t) as { format?: unknown }).catch(() => null);
      if (manifest?.format !== 'rank1-demo') {
        throw new DemoFolderError(`--out ${out} is not empty and holds no earlier rank1 demo (${DEMO_FILES.manifest}); choose a new folder`);
      }
      for (const [key, name] of Object.entries(DEMO_FILES)) {
        if (key === 'interpret') continue;
        await fs.rm(path.join(out, name), { recursive: true, force: true });
      }
      const interpret = path.join(out, DEMO_FILES.interpret);
      for (const entry of await fs.readdir(interpret).catch(() => [] as string[])) {
        if (entry !== 'cache') await fs.rm(path.join(interpret, entry), { recursive: true, force: true });
      }
    }
  }
  await fs.mkdir(out, { recursive: true });
}

async function readJsonFile<T>(file: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new Error(`${file}: cannot be read (${what}): ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new Error(`${file}: not valid JSON (${what}): ${(error as Error).message}`);
  }
}

const FINAL_LOSS = (metrics: { loss: number }[]): number | null => metrics.at(-1)?.loss ?? null;

/** Runs the whole demo into options.out and returns demo.json's content (also written). */
export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const out = path.resolve(options.out);
  const base = path.resolve(options.base ?? TOY_BASE);
  const { sizes, backend, seed } = options;
  const progress = options.progress ?? new DemoProgress(DEMO_STEPS.length);
  const at = (name: string) => path.join(out, name);
  await prepareDemoFolder(out);
  const logFile = at(DEMO_FILES.log);
  // The library's own lines (training, world, extraction) go to demo.log, so the terminal keeps one display.
  const log = (line: string) => appendFileSync(logFile, `${line}\n`);
  log(`rank1 demo (${options.mode}), seed ${seed}, ${options.backendReason}; base ${base}; ${new Date().toISOString()}`);

  const summary: DemoSummary = {
    format: 'rank1-demo', version: 1, status: 'running', date: new Date().toISOString(), mode: options.mode, seed,
    backend: { name: backend.name, reason: options.backendReason },
    machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), memoryGiB: Math.round(os.totalmem() / 2 ** 30 * 10) / 10, node: process.version, platform: `${os.platform()} ${os.arch()}` },
    base, sizes, world: null, training: null, table1: null, ablation: null, store: null, topk: null, sae: null, autointerp: null,
    timings: progress.timings, totalSeconds: 0,
  };
  const writeSummary = () => fs.writeFile(at(DEMO_FILES.manifest), `${JSON.stringify(summary, null, 2)}\n`);
  await writeSummary(); // marks the folder as a demo's from the start (a rerun may then clear it)

  try {
    // ---- world ------------------------------------------------------------------------------------------
    progress.begin('world');
    const manifestFile = path.join(base, WORLD_FILES.world);
    const manifest = await readJsonFile<WorldManifest>(manifestFile, 'the toy base\'s world manifest');
    const worldOptions = worldOptionsFromManifest(manifest);
    const worldDir = at(DEMO_FILES.world);
    const remade = await makeWorld(worldDir, worldOptions, log);
    for (const name of [WORLD_FILES.reasoning, WORLD_FILES.heldout]) {
      if (remade.files[name]?.sha256 !== manifest.files[name]?.sha256) {
        throw new Error(`${worldDir}/${name} differs from the world ${base} was pretrained on (${manifestFile} hashes)`);
      }
    }
    const traces = path.join(worldDir, WORLD_FILES.reasoning);
    const allProblems = await loadBenchmark('toy', path.join(worldDir, WORLD_FILES.heldout));
    const problems = allProblems.slice(0, sizes.heldout);
    summary.world = { seed: worldOptions.seed, version: worldOptions.version, reasoningRows: worldOptions.reasoningRows, heldoutProblems: allProblems.length };
    progress.end(`remade ${base}'s world (version ${worldOptions.version}, seed ${worldOptions.seed}, hashes match): ${worldOptions.reasoningRows} traces, ${allProblems.length} held-out problems`);

    const tokenizer = await loadTokenizer(base);
    if (!tokenizer) throw new Error(`${base} has no tokenizer.json; the demo needs the toy base folder`);
    const template = await loadChatTemplate(base);
    const examples = tokenizeRows(await loadTrainingRows(traces), tokenizer, template, DEFAULT_BLOCK_SIZE);

    // ---- training ---------------------------------------------------------------------------------------
    const loraDir = at(DEMO_FILES.lora);
    const fullDir = at(DEMO_FILES.full);
    const loraTrained = await trainStep(progress, 'train rank 1', { base, backend, examples, tokenizer, outDir: loraDir, log, mode: 'adapter', sizes, seed });
    const fullTrained = await trainStep(progress, 'train full', { base, backend, examples, tokenizer, outDir: fullDir, log, mode: 'full', sizes, seed });
    summary.training = { lora: loraTrained, full: fullTrained };

    // ---- evaluations and Table 1 ------------------------------------------------------------------------
    const evalDir = at(DEMO_FILES.eval);
    await fs.mkdir(evalDir, { recursive: true });
    const results = { base: path.join(evalDir, 'base.jsonl'), lora: path.join(evalDir, 'lora.jsonl'), full: path.join(evalDir, 'full.jsonl') };
    const evalOptions = { backend, problems, tokenizer, sizes };
    await evalStep(progress, 'eval base', { ...evalOptions, modelDir: base, out: results.base });
    await evalStep(progress, 'eval rank 1', { ...evalOptions, modelDir: base, adapterDir: loraDir, out: results.lora });
    await evalStep(progress, 'eval full', { ...evalOptions, modelDir: fullDir, out: results.full });

    progress.begin('table 1');
    const compare = await buildCompareTable([{ bench: 'toy', files: results }]);
    for (const warning of compare.warnings) log(`warning: ${warning}`);
    const cell = (role: 'base' | 'lora' | 'full'): Table1Row => {
      const { file, ...rest } = compare.cells[role].toy!;
      return { ...rest, file: path.relative(out, file) };
    };
    const table1: Table1 = {
      bench: 'toy', problems: problems.length, base: cell('base'), lora: cell('lora'), full: cell('full'),
      recovery_percent: compare.recovery.toy ?? null,
      compare: { ...compare, cells: relativeCells(compare.cells, out) },
    };
    await fs.writeFile(at(DEMO_FILES.table1), `${JSON.stringify(table1, null, 2)}\n`);
    summary.table1 = table1;
    log(formatCompareTable(compare));
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
    progress.end(`base ${pct(table1.base.accuracy)}, rank 1 ${pct(table1.lora.accuracy)}, full ${pct(table1.full.accuracy)}, `
      + `recovery ${table1.recovery_percent === null ? 'n/a' : `${table1.recovery_percent.toFixed(0)}%`} (${problems.length} problems)`);

    // ---- the analysis: one model with the rank-1 adapter ------------------------------------------------
    const { model } = await loadQwen2Checkpoint(base, backend);
    try {
      await loadPeftAdapter(loraDir, model);
      summary.ablation = await ablateStep(progress, { model, tokenizer, template, traces, out: at(DEMO_FILES.ablation), sizes, seed });
      progress.begin('extract');
      const storeDir = at(DEMO_FILES.store);
      // The store is made of the first extractTraces traces, written out so that it is a complete store of a file.
      let storeData = traces;
      if (sizes.extractTraces < worldOptions.reasoningRows) {
        storeData = at(DEMO_FILES.storeTraces);
        const lines = (await fs.readFile(traces, 'utf8')).split('\n').filter((l) => l.trim() !== '');
        await fs.writeFile(storeData, lines.slice(0, sizes.extractTraces).map((l) => `${l}\n`).join(''));
      }
      const index: StoreIndex = await extractActivations({
        model, tokenizer, template, data: storeData, out: storeDir, modelDir: base, adapterDir: loraDir,
        rendering: 'training', maxTokens: EXTRACT_DEFAULTS.maxTokens, mlpNeurons: sizes.mlpNeurons,
        onProgress: (p) => progress.update(p.rows, p.totalRows, 'traces', `${p.tokens} tokens`),
      });
      summary.store = { examples: index.examples, tokens: index.tokens, hooks: index.hooks.length, mlpNeurons: index.mlp_neurons.length };
      progress.end(`${index.tokens} tokens of ${index.examples} traces, ${index.hooks.length} adapter activations + ${index.mlp_neurons.length} MLP neurons per token`);
    } finally {
      model.dispose();
    }

    const store = await ActivationStore.open(at(DEMO_FILES.store));
    progress.begin('topk');
    const features = await topActivations(store, {
      k: sizes.topk.k, context: sizes.topk.context, tokenizer,
      onProgress: (p) => progress.update(p.shards, p.totalShards, 'shards'),
    });
    const topkFile = path.join(at(DEMO_FILES.topk), 'features.jsonl');
    await fs.mkdir(path.dirname(topkFile), { recursive: true });
    await writeFeaturesJsonl(topkFile, features);
    summary.topk = { features: features.length, active: features.filter((f) => f.active_count > 0).length };
    progress.end(`${features.length} features (${summary.topk.active} active): adapter directions and MLP neurons, both polarities`);

    // ---- SAE ---------------------------------------------------------------------------------------------
    progress.begin('sae train');
    const saeDir = at(DEMO_FILES.sae);
    const source = storeSource(store);
    const saeConfig = defaultSaeConfig(source.d, { expansion: sizes.sae.expansion, k: sizes.sae.k, variant: 'standard' });
    const metrics = await trainSae({
      source, out: saeDir, backend, config: saeConfig, expansion: sizes.sae.expansion, batch: sizes.sae.batch, lr: sizes.sae.lr,
      warmupSteps: sizes.sae.warmup, epochs: sizes.sae.epochs, seed, inference: 'threshold', saveEvery: Number.MAX_SAFE_INTEGER,
      onStep: (step, total, s) => progress.update(step, total, 'steps', `mse ${s.mse.toFixed(4)}, L0 ${s.l0.toFixed(1)}`),
    });
    if (!metrics) throw new Error('SAE training stopped before its end');
    progress.end(`${saeConfig.latents} latents, k ${saeConfig.k}, ${metrics.steps} steps: held-out FVU ${metrics.fvu.toFixed(3)}, L0 ${metrics.l0.toFixed(1)}, ${metrics.live} live / ${metrics.dead} dead`);

    progress.begin('sae features');
    const { sae, config: saeFileConfig } = await readSaeFolder(saeDir, backend);
    let latents: SaeFeature[];
    try {
      latents = await saeFeatures(sae, store, { inference: saeFileConfig.inference, k: sizes.topk.k, context: sizes.topk.context, tokenizer });
    } finally {
      sae.dispose();
    }
    const saeFeaturesFile = path.join(at(DEMO_FILES.saeFeatures), 'features.jsonl');
    await fs.mkdir(path.dirname(saeFeaturesFile), { recursive: true });
    await writeFeaturesJsonl(saeFeaturesFile, latents);
    summary.sae = { ...metrics, latentsFiring: latents.length };
    progress.end(`${latents.length} of ${saeConfig.latents} latents fire; each with its top examples and decoder row over the adapters`);

    // ---- autointerp --------------------------------------------------------------------------------------
    progress.begin('autointerp');
    const featureFiles = [topkFile, saeFeaturesFile];
    const hint = autointerpHint(out, featureFiles);
    if (options.endpoint) {
      summary.autointerp = await autointerpStep(progress, options.endpoint, featureFiles, at(DEMO_FILES.interpret), seed);
      progress.end(`${summary.autointerp.explained}/${summary.autointerp.features} features explained, ${summary.autointerp.categories} categories (${options.endpoint.model} at ${options.endpoint.url})`);
    } else {
      progress.end('skipped: no --endpoint');
      progress.note(`autointerp needs an OpenAI-compatible endpoint: rerun with --endpoint URL --explainer-model NAME, or label the features with rank1 itself as the endpoint: ${hint.join(' ')}`);
    }

    // ---- dashboard ---------------------------------------------------------------------------------------
    // Every feature with its examples (and labels, when autointerp ran), Figure 1 and Table 2, and the
    // playground with the base and the rank-1 adapter just trained embedded (the engine runs in the page).
    progress.begin('dashboard');
    const explanationsFile = path.join(at(DEMO_FILES.interpret), 'explanations.jsonl');
    const labelled = summary.autointerp !== null && await fs.access(explanationsFile).then(() => true, () => false);
    const site = await buildDashboard({
      features: featureFiles, out: at(DEMO_FILES.dashboard), title: 'rank1 demo · toy world',
      ablation: path.join(at(DEMO_FILES.ablation), 'ablation.json'), model: base, adapter: at(DEMO_FILES.lora),
      ...(labelled ? { explanations: explanationsFile } : {}),
    });
    progress.end(`${site.features} features${labelled ? ' with their labels' : ''}, the overview and the playground: ${shownPath(path.join(site.dir, 'index.html'))}`);

    // ---- report ------------------------------------------------------------------------------------------
    progress.begin('report');
    summary.status = 'complete';
    summary.totalSeconds = progress.elapsedSeconds;
    const report = at(DEMO_FILES.report);
    await writeReport(report, {
      out, summary, topFeatures: pickFeatures(features, summary.ablation?.topAdapters ?? []), latents: pickLatents(latents), autointerpHint: hint,
    });
    progress.end(shownPath(report));
    summary.totalSeconds = progress.elapsedSeconds;
    await writeSummary();
    return summary;
  } finally {
    progress.stop();
  }
}

/** A path as the user would type it from here: relative inside the working folder, else absolute. */
export function shownPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel === '' ? '.' : rel.startsWith('..') || path.isAbsolute(rel) ? path.resolve(file) : rel;
}

function relativeCells(cells: CompareTable['cells'], out: string): CompareTable['cells'] {
  const result: CompareTable['cells'] = { base: {}, lora: {}, full: {} };
  for (const role of ['base', 'lora', 'full'] as const) {
    for (const [bench, c] of Object.entries(cells[role])) (result[role] as Record<string, unknown>)[bench] = { ...c, file: path.relative(out, c.file) };
  }
  return result;
}

// ---- steps --------------------------------------------------------------------------------------------

interface TrainStepOptions {
  base: string;
  backend: Backend;
  examples: readonly TokenizedExample[];
  tokenizer: Tokenizer;
  outDir: string;
  log: (line: string) => void;
  mode: 'adapter' | 'full';
  sizes: DemoSizes;
  seed: number;
}

async function trainStep(progress: DemoProgress, name: string, o: TrainStepOptions): Promise<{ steps: number; finalLoss: number | null }> {
  progress.begin(name);
  const sizes = o.mode === 'adapter' ? o.sizes.lora : o.sizes.full;
  const { model, config } = await loadQwen2Checkpoint(o.base, o.backend);
  try {
    const settings: TrainSettings = {
      ...PAPER_TRAINING,
      mode: o.mode,
      epochs: sizes.epochs,
      ...(sizes.maxSteps !== undefined ? { maxSteps: sizes.maxSteps } : {}),
      batchSize: o.sizes.batch,
      microBatch: o.sizes.microBatch,
      lr: sizes.lr,
      seed: o.seed,
      gradientCheckpointing: false,
      saveEvery: Number.MAX_SAFE_INTEGER, // the final weights only
      keepCheckpoints: 1,
      padId: o.tokenizer.padTokenId ?? o.tokenizer.chatTokens.endOfText ?? 0,
    };
    const writeModel = async (dir: string) => {
      await writeCheckpoint(dir, config, modelTensors(model), { dtype: 'f32' });
      await copyCompanionFiles(o.base, dir);
    };
    const result = await train(model, o.examples, settings, {
      outDir: o.outDir,
      log: o.log,
      onStep: (m, total) => progress.update(m.step, total, 'steps', `loss ${m.loss.toFixed(4)}`),
    }, writeModel);
    const finalLoss = FINAL_LOSS(result.metrics);
    const first = result.metrics[0]?.loss;
    progress.end(`${result.steps} steps at lr ${settings.lr}, loss ${first?.toFixed(3) ?? '?'} → ${finalLoss?.toFixed(3) ?? '?'}; `
      + `${o.mode === 'adapter' ? 'PEFT adapter' : 'model folder'} in ${path.basename(o.outDir)}/`);
    return { steps: result.steps, finalLoss };
  } finally {
    model.dispose();
  }
}

interface EvalStepOptions {
  backend: Backend;
  problems: readonly EvalProblem[];
  tokenizer: Tokenizer;
  sizes: DemoSizes;
  modelDir: string;
  adapterDir?: string;
  out: string;
}

async function evalStep(progress: DemoProgress, name: string, o: EvalStepOptions): Promise<void> {
  progress.begin(name);
  const { model, config } = await loadQwen2Checkpoint(o.modelDir, o.backend);
  try {
    if (o.adapterDir) await loadPeftAdapter(o.adapterDir, model);
    const found = await findChatTemplate(o.modelDir);
    const result = await runEval({
      bench: 'toy', problems: o.problems, tokenizer: o.tokenizer, chatTemplate: found?.template ?? QWEN25_INSTRUCT_CHAT_TEMPLATE,
      complete: modelCompleter(model), completeBatch: modelBatchCompleter(model), batchSize: o.sizes.evalBatch, out: o.out,
      maxTokens: Math.min(o.sizes.evalMaxTokens, config.maxPositionEmbeddings),
      onProblem: (p) => progress.update(p.done, p.total, 'problems', `${p.correctSoFar} correct`),
    });
    const { summary } = result;
    progress.end(`${summary.correct}/${summary.n} correct (${(100 * summary.accuracy).toFixed(1)}%), ${summary.meanTokens.toFixed(0)} tokens per answer`);
  } finally {
    model.dispose();
  }
}

interface AblateStepOptions {
  model: Qwen2Model;
  tokenizer: Tokenizer;
  template: string;
  traces: string;
  out: string;
  sizes: DemoSizes;
  seed: number;
}

/** As `rank1 ablate` (src/cli/interp-commands.ts): the draw, the sweep, ablation.json, the two figures and Table 2. */
async function ablateStep(progress: DemoProgress, o: AblateStepOptions): Promise<NonNullable<DemoSummary['ablation']>> {
  progress.begin('ablate');
  const maxTokens = EXTRACT_DEFAULTS.maxTokens;
  const lengths: { example: number; tokens: number }[] = [];
  const ids: Int32Array[] = [];
  let row = 0;
  for await (const input of iterateTrainingRows(o.traces)) {
    const rowIds = extractionIds(input, o.tokenizer, 'training', o.template, maxTokens);
    ids.push(rowIds);
    lengths.push({ example: row++, tokens: rowIds.length });
  }
  const chosen = chooseExamples(lengths, o.sizes.ablationExamples, o.seed, o.sizes.ablationMinTokens);
  const examples: AblationExample[] = chosen.map((example) => ({ example, inputIds: ids[example]! }));
  const groups = ablationGroups(o.model.dims.layers, [...o.model.adapters!.adapters.keys()]);
  const result: AblationResult = await ablationSweep(o.model, examples, groups, {
    onProgress: (p) => progress.update(p.forwards, p.totalForwards, 'forwards', `sequence ${p.examples}/${p.totalExamples}`),
  });
  await writeAblationOutputs(o.out, result, { data: o.traces, format: 'training', seed: o.seed, max_tokens: maxTokens, min_tokens: o.sizes.ablationMinTokens });
  const kl = (kind: string) => result.groups.find((g) => g.kind === kind)?.kl ?? Number.NaN;
  const topAdapters = result.groups.filter((g) => g.kind === 'adapter').sort((a, b) => b.kl - a.kl).slice(0, 5).map((g) => ({ name: g.name, kl: g.kl }));
  const summary = { examples: result.examples.length, tokens: result.tokens, fullCe: result.full_ce, mlp: kl('mlp'), attention: kl('attention'), all: kl('all'), topAdapters };
  progress.end(`${groups.length} groups over ${summary.examples} traces (${summary.tokens} tokens): KL MLP ${summary.mlp.toFixed(3)}, attention ${summary.attention.toFixed(3)}, all ${summary.all.toFixed(3)}; `
    + `largest single adapter ${topAdapters[0]?.name ?? 'n/a'}`);
  return summary;
}

async function autointerpStep(progress: DemoProgress, endpoint: DemoEndpoint, featureFiles: string[], out: string, seed: number): Promise<NonNullable<DemoSummary['autointerp']>> {
  const prompts = await loadPrompts();
  const features = await readFeatureFiles(featureFiles);
  await fs.mkdir(out, { recursive: true });
  const client = new CachedChatClient({
    endpoint: endpoint.url, model: endpoint.model, apiKey: endpoint.apiKey, cacheDir: path.join(out, 'cache'),
    concurrency: 8, retries: 6, timeoutMs: 120_000, temperature: 0, maxTokens: 1000,
  });
  const result = await interpretFeatures(features, {
    client, prompts, out, seed,
    onProgress: (p) => progress.update(p.done + p.failed, p.total, p.stage, `${p.failed} failed, ${client.totals.requests} requests`),
  });
  await writeInterpretFigures(out, result.explanations, features, result.scores, seed);
  return {
    explained: result.explanations.filter((r) => r.explanation !== null).length,
    features: result.explanations.length,
    categories: result.categories.length,
    errors: result.explanations.filter((r) => r.error).length,
  };
}

/** The line printed when no endpoint is given: how to label the features, with rank1 itself as the endpoint. */
export function autointerpHint(out: string, featureFiles: readonly string[]): string[] {
  const rel = shownPath;
  return [
    'rank1 serve --model models/toy --port 8000 &',
    `rank1 interpret --features ${featureFiles.map(rel).join(' ')} --out ${rel(path.join(out, DEMO_FILES.interpret))} `
      + '--endpoint http://127.0.0.1:8000/v1 --model toy --prompts docs/toy-analysis/prompts --show 3 --max-tokens 700',
  ];
}

/** For the report: the top-k features of the adapters whose ablation moves the output most, both polarities. */
function pickFeatures(features: readonly FeatureTopExamples[], topAdapters: readonly { name: string; kl: number }[]): { feature: FeatureTopExamples; kl: number }[] {
  const picked: { feature: FeatureTopExamples; kl: number }[] = [];
  for (const { name, kl } of topAdapters) {
    for (const f of features) if (f.hook === name && f.active_count > 0) picked.push({ feature: f, kl });
  }
  return picked;
}

/** For the report: the latents that fire most often. */
function pickLatents(latents: readonly SaeFeature[]): SaeFeature[] {
  return [...latents].sort((a, b) => b.active_count - a.active_count || a.latent - b.latent).slice(0, 8);
}
