// The demo's second half, as steps, on the base with the rank-1 adapter just trained: the ablation sweep
// (Figure 1, KL by layer, Table 2), the activation store, top-k, an SAE and its features, autointerp when an
// endpoint is given, the dashboard and report.html. The analysis steps are the jobs the commands run
// (src/jobs: runAblation, runExtract, runTopk, runInterpret) at the demo's sizes.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../model/load.ts';
import { ActivationStore } from '../interp/activation-store.ts';
import type { FeatureTopExamples } from '../interp/topk.ts';
import { largestAdapters } from '../interp/figures.ts';
import { defaultSaeConfig } from '../interp/sae.ts';
import { storeSource } from '../interp/sae-data.ts';
import { readSaeFolder } from '../interp/sae-folder.ts';
import { trainSae } from '../interp/sae-train.ts';
import { saeFeatures, type SaeFeature } from '../interp/sae-features.ts';
import { writeFeaturesJsonl } from '../interp/features-file.ts';
import { buildDashboard } from '../dashboard/build.ts';
import { runAblation } from '../jobs/ablate.ts';
import { EXTRACT_DEFAULTS, runExtract } from '../jobs/extract.ts';
import { FEATURES_FILE, runTopk } from '../jobs/topk.ts';
import { runInterpret } from '../jobs/interpret.ts';
import type { DemoContext, DemoStep } from './context.ts';
import { DEMO_FILES, DEMO_PATHS, shownPath } from './folder.ts';
import { writeReport } from './report.ts';

/** The base with the rank-1 adapter, loaded once for the ablation and the extraction. */
async function loadAnalysisModel(context: DemoContext) {
  const { model } = await loadQwen2Checkpoint(context.settings.base, context.settings.backend);
  try {
    await loadPeftAdapter(context.at(DEMO_FILES.lora), model);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return context.make('analysisModel', model);
}

/** As `rank1 ablate`: the draw, the sweep, ablation.json, the two figures and Table 2. */
async function ablate(context: DemoContext): Promise<string> {
  const { sizes, seed } = context.settings;
  const { tokenizer, template } = context.made('data');
  const model = await loadAnalysisModel(context);
  const { result } = await runAblation({
    model, tokenizer, template, data: context.made('world').traces, out: context.at(DEMO_FILES.ablation),
    examples: sizes.ablationExamples, seed, minTokens: sizes.ablationMinTokens, recordSeconds: false,
  }, {
    onProgress: (p) => context.progress.update(p.forwards, p.totalForwards, 'forwards', `sequence ${p.examples}/${p.totalExamples}`),
  });
  const klOf = (kind: string) => result.groups.find((g) => g.kind === kind)?.kl ?? Number.NaN;
  const [mlp, attention, all] = [klOf('mlp'), klOf('attention'), klOf('all')];
  const topAdapters = largestAdapters(result, 5).map((g) => ({ name: g.name, kl: g.kl }));
  const summary = { examples: result.examples.length, tokens: result.tokens, fullCe: result.full_ce, mlp, attention, all, topAdapters };
  context.summary.ablation = summary;
  return `${result.groups.length} groups over ${summary.examples} traces (${summary.tokens} tokens): KL MLP ${mlp.toFixed(3)}, attention ${attention.toFixed(3)}, all ${all.toFixed(3)}; `
    + `largest single adapter ${topAdapters[0]?.name ?? 'n/a'}`;
}

/** As `rank1 extract`, over the first extractTraces traces (written out, so the store is a complete store of a file). */
async function extract(context: DemoContext): Promise<string> {
  const { base, sizes } = context.settings;
  const { tokenizer, template } = context.made('data');
  const { options: world, traces } = context.made('world');
  const model = context.takeAnalysisModel();
  try {
    let data = traces;
    if (sizes.extractTraces < world.reasoningRows) {
      data = context.at(DEMO_FILES.storeTraces);
      const lines = (await fs.readFile(traces, 'utf8')).split('\n').filter((l) => l.trim() !== '');
      await fs.writeFile(data, lines.slice(0, sizes.extractTraces).map((l) => `${l}\n`).join(''));
    }
    const index = await runExtract({
      model, tokenizer, template, data, out: context.at(DEMO_FILES.store), modelDir: base, adapterDir: context.at(DEMO_FILES.lora),
      rendering: 'training', maxTokens: EXTRACT_DEFAULTS.maxTokens, mlpNeurons: sizes.mlpNeurons,
    }, {
      onProgress: (p) => context.progress.update(p.rows, p.totalRows, 'traces', `${p.tokens} tokens`),
    });
    context.summary.store = { examples: index.examples, tokens: index.tokens, hooks: index.hooks.length, mlpNeurons: index.mlp_neurons.length };
    return `${index.tokens} tokens of ${index.examples} traces, ${index.hooks.length} adapter activations + ${index.mlp_neurons.length} MLP neurons per token`;
  } finally {
    model.dispose();
  }
}

/** As `rank1 topk`, at the demo's k and context. */
async function topk(context: DemoContext): Promise<string> {
  const { sizes } = context.settings;
  const { features, file } = await runTopk({
    store: context.at(DEMO_FILES.store), out: context.at(DEMO_FILES.topk), k: sizes.topk.k, context: sizes.topk.context,
    tokenizer: context.made('data').tokenizer,
  }, {
    onProgress: (p) => context.progress.update(p.shards, p.totalShards, 'shards'),
  });
  context.make('features', features);
  context.make('topkFile', file);
  const active = features.filter((f) => f.active_count > 0).length;
  context.summary.topk = { features: features.length, active };
  return `${features.length} features (${active} active): adapter directions and MLP neurons, both polarities`;
}

/** A BatchTopK SAE over the store's adapter state. */
async function trainStoreSae(context: DemoContext): Promise<string> {
  const { backend, sizes, seed } = context.settings;
  const store = context.make('store', await ActivationStore.open(context.at(DEMO_FILES.store)));
  const source = storeSource(store);
  const config = defaultSaeConfig(source.d, { expansion: sizes.sae.expansion, k: sizes.sae.k, variant: 'standard' });
  const metrics = await trainSae({
    source, out: context.at(DEMO_FILES.sae), backend, config, expansion: sizes.sae.expansion, batch: sizes.sae.batch, lr: sizes.sae.lr,
    warmupSteps: sizes.sae.warmup, epochs: sizes.sae.epochs, seed, inference: 'threshold', saveEvery: Number.MAX_SAFE_INTEGER,
    onStep: (step, total, s) => context.progress.update(step, total, 'steps', `mse ${s.mse.toFixed(4)}, L0 ${s.l0.toFixed(1)}`),
  });
  if (!metrics) throw new Error('SAE training stopped before its end');
  context.make('saeMetrics', metrics);
  return `${config.latents} latents, k ${config.k}, ${metrics.steps} steps: held-out FVU ${metrics.fvu.toFixed(3)}, L0 ${metrics.l0.toFixed(1)}, ${metrics.live} live / ${metrics.dead} dead`;
}

/** Each latent that fires: its top examples and decoder row over the adapters. */
async function saeLatentFeatures(context: DemoContext): Promise<string> {
  const { backend, sizes } = context.settings;
  const { sae, config } = await readSaeFolder(context.at(DEMO_FILES.sae), backend);
  let latents: SaeFeature[];
  try {
    latents = await saeFeatures(sae, context.made('store'), { inference: config.inference, k: sizes.topk.k, context: sizes.topk.context, tokenizer: context.made('data').tokenizer });
  } finally {
    sae.dispose();
  }
  const file = context.at(DEMO_FILES.saeFeatures, FEATURES_FILE);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await writeFeaturesJsonl(file, latents);
  context.make('latents', latents);
  context.make('saeFeaturesFile', file);
  context.summary.sae = { ...context.made('saeMetrics'), latentsFiring: latents.length };
  return `${latents.length} of ${config.latents} latents fire; each with its top examples and decoder row over the adapters`;
}

const featureFiles = (context: DemoContext) => [context.made('topkFile'), context.made('saeFeaturesFile')];

/** As `rank1 interpret` (no log.jsonl), when an endpoint is given; else the commands that would label the features. */
async function autointerp(context: DemoContext): Promise<string> {
  const { endpoint, seed } = context.settings;
  if (!endpoint) {
    const hint = autointerpHint(context.settings.out, featureFiles(context));
    context.afterStep(`autointerp needs an OpenAI-compatible endpoint: rerun with --endpoint URL --explainer-model NAME, or label the features with rank1 itself as the endpoint: ${hint.join(' ')}`);
    return 'skipped: no --endpoint';
  }
  const result = await runInterpret({
    features: featureFiles(context), out: context.at(DEMO_FILES.interpret), endpoint: endpoint.url, model: endpoint.model, apiKey: endpoint.apiKey,
    seed, log: false,
  }, {
    onProgress: (p, totals) => context.progress.update(p.done + p.failed, p.total, p.stage, `${p.failed} failed, ${totals.requests} requests`),
  });
  const summary = {
    explained: result.explanations.filter((r) => r.explanation !== null).length,
    features: result.explanations.length,
    categories: result.categories.length,
    errors: result.explanations.filter((r) => r.error).length,
  };
  context.summary.autointerp = summary;
  return `${summary.explained}/${summary.features} features explained, ${summary.categories} categories (${endpoint.model} at ${endpoint.url})`;
}

/** The line printed when no endpoint is given: how to label the features, with rank1 itself as the endpoint. */
export function autointerpHint(out: string, files: readonly string[]): string[] {
  return [
    'rank1 serve --model models/toy --port 8000 &',
    `rank1 interpret --features ${files.map(shownPath).join(' ')} --out ${shownPath(path.join(out, DEMO_FILES.interpret))} `
      + '--endpoint http://127.0.0.1:8000/v1 --model toy --prompts docs/toy-analysis/prompts --show 3 --max-tokens 700',
  ];
}

/**
 * Every feature with its examples (and labels, when autointerp ran), Figure 1 and Table 2, and the playground
 * with the base and the rank-1 adapter just trained embedded (the engine runs in the page).
 */
async function dashboard(context: DemoContext): Promise<string> {
  const explanations = context.at(DEMO_PATHS.interpret('explanations'));
  const labelled = context.summary.autointerp !== null && await fs.access(explanations).then(() => true, () => false);
  const site = await buildDashboard({
    features: featureFiles(context), out: context.at(DEMO_FILES.dashboard), title: 'rank1 demo · toy world',
    ablation: context.at(DEMO_PATHS.ablation('result')), model: context.settings.base, adapter: context.at(DEMO_FILES.lora),
    ...(labelled ? { explanations } : {}),
  });
  return `${site.features} features${labelled ? ' with their labels' : ''}, the overview and the playground: ${shownPath(path.join(site.dir, 'index.html'))}`;
}

async function report(context: DemoContext): Promise<string> {
  const { summary } = context;
  summary.status = 'complete';
  summary.totalSeconds = context.progress.elapsedSeconds;
  const file = context.at(DEMO_FILES.report);
  await writeReport(file, {
    out: context.settings.out, summary, topFeatures: pickFeatures(context.made('features'), summary.ablation?.topAdapters ?? []),
    latents: pickLatents(context.made('latents')), autointerpHint: autointerpHint(context.settings.out, featureFiles(context)),
  });
  return shownPath(file);
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

export const ANALYSIS_STEPS: readonly DemoStep[] = [
  { name: 'ablate', run: ablate },
  { name: 'extract', run: extract },
  { name: 'topk', run: topk },
  { name: 'sae train', run: trainStoreSae },
  { name: 'sae features', run: saeLatentFeatures },
  { name: 'autointerp', run: autointerp },
  { name: 'dashboard', run: dashboard },
  { name: 'report', run: report },
];
