// The demo's first half, as steps: remake the base's world, train rank 1 and full on its traces, evaluate the
// three models on its held-out problems, and Table 1 with % recovery. On the CPU backend with a second core,
// the full finetune and its evaluation run in a second process (second-process.ts), started as soon as the world
// is made, alongside everything else up to the 'train full' and 'eval full' steps, which then take its results.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE, findChatTemplate, loadChatTemplate } from '../model/chat-template.ts';
import { copyCompanionFiles, writeCheckpoint } from '../model/checkpoint.ts';
import { loadPeftAdapter, loadQwen2Checkpoint, modelTensors } from '../model/load.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { withHooks } from '../model/hook-registry.ts';
import { adapterModules, resolveModuleSelection, selectionLabel, zeroAblationHooks } from '../model/adapter-select.ts';
import { DEFAULT_BLOCK_SIZE, loadTrainingRows, tokenizeRows } from '../train/data.ts';
import { train } from '../train/trainer.ts';
import { loadBenchmark } from '../eval/benchmarks.ts';
import { buildCompareTable, formatCompareTable, type AblatedRole, type CompareTable } from '../eval/compare.ts';
import { modelBatchCompleter, modelCompleter, runEval } from '../eval/run.ts';
import { makeWorld, worldOptionsFromManifest, WORLD_FILES, type WorldManifest, type WorldOptions } from '../world/make.ts';
import type { DemoContext, DemoStep, TrainedModel } from './context.ts';
import { DEMO_ABLATIONS, DEMO_FILES, DEMO_PATHS, type DemoAblation, type DemoRole, type Table1, type Table1Row } from './folder.ts';
import { demoTrainSettings } from './settings.ts';
import { SecondProcess, type AlongsideResult, type AlongsideStep } from './second-process.ts';

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

/** The base's own world, remade from its world.json (hashes checked); then its tokenizer and the traces tokenized. */
async function remakeWorld(context: DemoContext): Promise<string> {
  const { base } = context.settings;
  const manifestFile = path.join(base, WORLD_FILES.world);
  const manifest = await readJsonFile<WorldManifest>(manifestFile, 'the toy base\'s world manifest');
  const options = worldOptionsFromManifest(manifest);
  const worldDir = context.at(DEMO_FILES.world);
  const remade = await makeWorld(worldDir, options, context.log);
  for (const name of [WORLD_FILES.reasoning, WORLD_FILES.heldout]) {
    if (remade.files[name]?.sha256 !== manifest.files[name]?.sha256) {
      throw new Error(`${worldDir}/${name} differs from the world ${base} was pretrained on (${manifestFile} hashes)`);
    }
  }
  const heldoutProblems = await readWorld(context, options);
  context.summary.world = { seed: options.seed, version: options.version, reasoningRows: options.reasoningRows, heldoutProblems };
  if (context.settings.secondProcess) startSecondProcess(context);
  return `remade ${base}'s world (version ${options.version}, seed ${options.seed}, hashes match): ${options.reasoningRows} traces, ${heldoutProblems} held-out problems`;
}

/**
 * The world folder's traces (tokenized for training, with the base's tokenizer and chat template) and its first
 * `heldout` problems, as the products 'world' and 'data'; returns how many held-out problems the world has.
 * The world step calls it once the world is made, and so does the second process.
 */
export async function readWorld(context: DemoContext, options: WorldOptions): Promise<number> {
  const { base, sizes } = context.settings;
  const worldDir = context.at(DEMO_FILES.world);
  const traces = path.join(worldDir, WORLD_FILES.reasoning);
  const allProblems = await loadBenchmark('toy', path.join(worldDir, WORLD_FILES.heldout));
  context.make('world', { options, traces, problems: allProblems.slice(0, sizes.heldout) });
  const tokenizer = await loadTokenizer(base);
  if (!tokenizer) throw new Error(`${base} has no tokenizer.json; the demo needs the toy base folder`);
  const template = await loadChatTemplate(base);
  context.make('data', { tokenizer, template, examples: tokenizeRows(await loadTrainingRows(traces), tokenizer, template, DEFAULT_BLOCK_SIZE) });
  return allProblems.length;
}

/** Trains the base on the traces, rank-1 adapters on all 7 projections of every layer or every weight (not one optimizer step: the whole run). */
export async function trainDemoModel(context: DemoContext, mode: 'adapter' | 'full'): Promise<TrainedModel> {
  const { base, backend, sizes, seed } = context.settings;
  const { tokenizer, examples } = context.made('data');
  const outDir = context.at(mode === 'adapter' ? DEMO_FILES.lora : DEMO_FILES.full);
  const { model, config } = await loadQwen2Checkpoint(base, backend);
  try {
    const settings = demoTrainSettings(sizes, mode, seed, tokenizer.padTokenId ?? tokenizer.chatTokens.endOfText ?? 0);
    const writeModel = async (dir: string) => {
      await writeCheckpoint(dir, config, modelTensors(model), { dtype: 'f32' });
      await copyCompanionFiles(base, dir);
    };
    const result = await train(model, examples, settings, {
      outDir,
      log: context.log,
      onStep: (m, total) => context.progress.update(m.step, total, 'steps', `loss ${m.loss.toFixed(4)}`),
    }, writeModel);
    const finalLoss = result.metrics.at(-1)?.loss ?? null;
    const first = result.metrics[0]?.loss;
    const line = `${result.steps} steps at lr ${settings.lr}, loss ${first?.toFixed(3) ?? '?'} → ${finalLoss?.toFixed(3) ?? '?'}; `
      + `${mode === 'adapter' ? 'PEFT adapter' : 'model folder'} in ${path.basename(outDir)}/`;
    return { line, trained: { steps: result.steps, finalLoss } };
  } finally {
    model.dispose();
  }
}

/** Starts the second process on the world just made: the full finetune and its evaluation, alongside the rest. */
function startSecondProcess(context: DemoContext): void {
  const { out, base, sizes, mode, seed } = context.settings;
  const job = { out, base, sizes, mode, seed, worldOptions: context.made('world').options };
  context.make('secondProcess', SecondProcess.start(job, context.log));
}

/** One of the second process's steps: waits for it and hands its own timing to the runner. */
async function takeFromSecondProcess(context: DemoContext, second: SecondProcess, step: AlongsideStep): Promise<AlongsideResult> {
  const result = await second.result(step, context.progress);
  context.alongside = result.timing;
  return result;
}

/** The rank-1 training, in this process. */
async function trainRank1(context: DemoContext): Promise<string> {
  const { line, trained } = await trainDemoModel(context, 'adapter');
  context.make('loraTraining', trained);
  return line;
}

/** The full finetune: in the second process when there is one (started by the world step), else here. */
async function trainFull(context: DemoContext): Promise<string> {
  const second = context.secondProcess();
  const { line, trained } = second ? await takeFromSecondProcess(context, second, 'train full') : await trainDemoModel(context, 'full');
  context.summary.training = { lora: context.made('loraTraining'), full: trained! };
  return line;
}

/** The full finetune's evaluation: in the second process, after its training, when there is one. */
async function evaluateFull(context: DemoContext): Promise<string> {
  const second = context.secondProcess();
  return second ? (await takeFromSecondProcess(context, second, 'eval full')).line : evaluate(context, 'full');
}

/** One model (the base, the base with the rank-1 adapter, the full finetune) on the held-out problems. */
export async function evaluate(context: DemoContext, role: DemoRole): Promise<string> {
  const { base, backend, sizes } = context.settings;
  const { tokenizer } = context.made('data');
  const modelDir = role === 'full' ? context.at(DEMO_FILES.full) : base;
  await fs.mkdir(context.at(DEMO_FILES.eval), { recursive: true });
  const { model, config } = await loadQwen2Checkpoint(modelDir, backend);
  try {
    if (role === 'lora') await loadPeftAdapter(context.at(DEMO_FILES.lora), model);
    const found = await findChatTemplate(modelDir);
    const { summary } = await runEval({
      bench: 'toy', problems: context.made('world').problems, tokenizer, chatTemplate: found?.template ?? QWEN25_INSTRUCT_CHAT_TEMPLATE,
      complete: modelCompleter(model), completeBatch: modelBatchCompleter(model), batchSize: sizes.evalBatch, out: context.at(DEMO_PATHS.evalResults(role)),
      maxTokens: Math.min(sizes.evalMaxTokens, config.maxPositionEmbeddings),
      onProblem: (p) => context.progress.update(p.done, p.total, 'problems', `${p.correctSoFar} correct`),
    });
    return `${summary.correct}/${summary.n} correct (${(100 * summary.accuracy).toFixed(1)}%), ${summary.meanTokens.toFixed(0)} tokens per answer`;
  } finally {
    model.dispose();
  }
}

/** Each ablation's role in `rank1 eval --compare`. */
const ABLATED_ROLE: Record<DemoAblation, AblatedRole> = { mlp: 'mlp_ablated', attention: 'attn_ablated' };

/**
 * Table 2's two models: the base with the rank-1 adapter, its MLP adapters zero-ablated for the whole generation,
 * then its attention adapters (as `rank1 eval --ablate mlp|attention`), on the problems Table 1 used.
 */
async function evaluateAblated(context: DemoContext): Promise<string> {
  const { base, backend, sizes } = context.settings;
  const { tokenizer } = context.made('data');
  const { model, config } = await loadQwen2Checkpoint(base, backend);
  try {
    const available = adapterModules(await loadPeftAdapter(context.at(DEMO_FILES.lora), model));
    const found = await findChatTemplate(base);
    const results: string[] = [];
    for (const [i, ablation] of DEMO_ABLATIONS.entries()) {
      const modules = resolveModuleSelection(ablation, available, 'the demo\'s adapter');
      const { summary } = await withHooks(model, zeroAblationHooks(modules), () => runEval({
        bench: 'toy', problems: context.made('world').problems, tokenizer, chatTemplate: found?.template ?? QWEN25_INSTRUCT_CHAT_TEMPLATE,
        complete: modelCompleter(model), completeBatch: modelBatchCompleter(model), batchSize: sizes.evalBatch, out: context.at(DEMO_PATHS.ablatedEvalResults(ablation)),
        maxTokens: Math.min(sizes.evalMaxTokens, config.maxPositionEmbeddings), ablated: selectionLabel(modules, available),
        onProblem: (p) => context.progress.update(i * p.total + p.done, 2 * p.total, 'problems', `${ablation} removed: ${p.correctSoFar} correct`),
      }));
      results.push(`${ablation} removed ${summary.correct}/${summary.n} (${(100 * summary.accuracy).toFixed(1)}%, ${summary.meanTokens.toFixed(0)} tokens)`);
    }
    return `rank 1 with ${results.join(', ')}`;
  } finally {
    model.dispose();
  }
}

/** table1.json from the evaluation files (Table 1 and Table 2), as `rank1 eval --compare` builds them. */
async function writeTable1(context: DemoContext): Promise<string> {
  const { out } = context.settings;
  const files = {
    base: context.at(DEMO_PATHS.evalResults('base')), lora: context.at(DEMO_PATHS.evalResults('lora')), full: context.at(DEMO_PATHS.evalResults('full')),
    [ABLATED_ROLE.mlp]: context.at(DEMO_PATHS.ablatedEvalResults('mlp')), [ABLATED_ROLE.attention]: context.at(DEMO_PATHS.ablatedEvalResults('attention')),
  };
  const compare = await buildCompareTable([{ bench: 'toy', files }]);
  for (const warning of compare.warnings) context.log(`warning: ${warning}`);
  const cell = (role: DemoRole | AblatedRole): Table1Row => {
    const { file, ...rest } = compare.cells[role]!.toy!;
    return { ...rest, file: path.relative(out, file) };
  };
  const table2Row = (ablation: DemoAblation) => ({ ...cell(ABLATED_ROLE[ablation]), gain_kept_percent: compare.table2?.recovery[ABLATED_ROLE[ablation]].toy ?? null });
  const problems = context.made('world').problems.length;
  const table1: Table1 = {
    bench: 'toy', problems, base: cell('base'), lora: cell('lora'), full: cell('full'),
    recovery_percent: compare.recovery.toy ?? null,
    table2: { mlp: table2Row('mlp'), attention: table2Row('attention') },
    compare: { ...compare, cells: relativeCells(compare.cells, out) },
  };
  await fs.writeFile(context.at(DEMO_FILES.table1), `${JSON.stringify(table1, null, 2)}\n`);
  context.summary.table1 = table1;
  context.log(formatCompareTable(compare));
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const kept = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(0)}%`);
  return `base ${pct(table1.base.accuracy)}, rank 1 ${pct(table1.lora.accuracy)}, full ${pct(table1.full.accuracy)}, `
    + `recovery ${table1.recovery_percent === null ? 'n/a' : `${table1.recovery_percent.toFixed(0)}%`} (${problems} problems); `
    + `Table 2: gain kept with MLP adapters removed ${kept(table1.table2.mlp.gain_kept_percent)}, attention removed ${kept(table1.table2.attention.gain_kept_percent)}`;
}

function relativeCells(cells: CompareTable['cells'], out: string): CompareTable['cells'] {
  const result: CompareTable['cells'] = { base: {}, lora: {}, full: {} };
  for (const [role, byBench] of Object.entries(cells) as [keyof CompareTable['cells'], CompareTable['cells']['base']][]) {
    result[role] = Object.fromEntries(Object.entries(byBench).map(([bench, c]) => [bench, { ...c, file: path.relative(out, c.file) }]));
  }
  return result;
}

export const TRAINING_STEPS: readonly DemoStep[] = [
  { name: 'world', run: remakeWorld },
  { name: 'train rank 1', run: trainRank1 },
  { name: 'train full', run: trainFull },
  { name: 'eval base', run: (context) => evaluate(context, 'base') },
  { name: 'eval rank 1', run: (context) => evaluate(context, 'lora') },
  { name: 'eval full', run: evaluateFull },
  { name: 'eval rank 1 ablated', run: evaluateAblated },
  { name: 'table 1', run: writeTable1 },
];
