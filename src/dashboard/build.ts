// `rank1 dashboard`: a static site to browse adapter directions, MLP neurons and SAE latents. The app is
// Preact (src/dashboard/app/), bundled by esbuild into one classic script, so index.html opens from file://
// with no server. Data is written as scripts too: data/index.js (every feature's summary row, the overview)
// and data/features-NNN.js (details of CHUNK features each) that the app loads when a feature is opened, so
// 10 000 features cost one index read and a chunk per page visited.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import { readFeatureFiles } from '../interp/features-file.ts';
import { writeFolderAtomic } from '../io/atomic.ts';
import { readJsonl } from '../io/jsonl.ts';
import { featureKind, parseFeatureName, type Polarity } from '../model/hooks.ts';
import { adapterHeatmapSpec, klByLayerSpec, largestAdapters, renderSvg, table2Rows } from '../interp/figures.ts';
import type { AblationResult } from '../interp/ablate.ts';
import type { FeatureTopExamples } from '../interp/topk.ts';
import type { AblationOverview, DashboardIndex, FeatureDetail, FeatureSummary } from './types.ts';
import { bundleBrowserEngine } from '../browser/bundle.ts';
import type { EmbeddedModelFiles } from '../browser/protocol.ts';

const APP_DIR = path.join(import.meta.dirname, 'app');
/** Feature details per data file. */
export const CHUNK = 50;

export interface DashboardOptions {
  features: readonly string[];
  explanations?: string;
  ablation?: string;
  out: string;
  title?: string;
  /** A model folder (and PEFT adapter) to embed for the playground page. */
  model?: string;
  adapter?: string;
}

interface ExplanationLine {
  feature: string;
  explanation: string | null;
  class: 0 | 1 | 2 | null;
  category: string | null;
}

async function readExplanations(file: string): Promise<Map<string, ExplanationLine>> {
  const rows = new Map<string, ExplanationLine>();
  for await (const { value, line } of readJsonl(file, { label: '--explanations', expected: 'explanations.jsonl from rank1 interpret' })) {
    const row = value as ExplanationLine;
    if (typeof row?.feature !== 'string') throw new Error(`${file}:${line}: field feature: expected a string (explanations.jsonl from rank1 interpret)`);
    rows.set(row.feature, row);
  }
  return rows;
}

async function readAblation(file: string): Promise<AblationResult> {
  const text = await fs.readFile(file, 'utf8').catch((error: Error) => {
    throw new Error(`--ablation ${file}: ${error.message}`);
  });
  let result: AblationResult;
  try {
    result = JSON.parse(text) as AblationResult;
  } catch {
    throw new Error(`--ablation ${file}: not JSON (expected ablation.json from rank1 ablate)`);
  }
  if (!Array.isArray(result.groups) || typeof result.full_ce !== 'number') throw new Error(`--ablation ${file}: no "groups" and "full_ce" (expected ablation.json from rank1 ablate)`);
  return result;
}

/** The layer, projection and polarity of a feature name (L3_q_proj_pos, L3_up_neuron12_neg), null where it has none. */
function featurePlace(name: string): { layer: number | null; projection: string | null; polarity: Polarity | null } {
  const { layer, projection, polarity } = parseFeatureName(name);
  return { layer: layer ?? null, projection: projection ?? null, polarity: polarity ?? null };
}

async function ablationOverview(result: AblationResult): Promise<AblationOverview> {
  return {
    examples: result.examples.length,
    tokens: result.tokens,
    fullCe: result.full_ce,
    table: table2Rows(result),
    topAdapters: largestAdapters(result, 10).map((g) => ({ hook: g.name, kl: g.kl, ce: g.ce })),
    klByLayerSvg: await renderSvg(klByLayerSpec(result)),
    heatmapSvg: await renderSvg(adapterHeatmapSpec(result)),
  };
}

function detail(feature: FeatureTopExamples & { decoder?: { hook: string; weight: number }[] }): FeatureDetail {
  return {
    name: feature.feature,
    hook: feature.hook,
    histogram: feature.histogram,
    examples: feature.examples.map((e) => ({
      example: e.example, position: e.position, value: e.value, center: e.center,
      tokens: e.context_tokens.length === e.context_ids.length ? e.context_tokens : e.context_ids.map((id) => `[${id}]`),
      values: e.context_values ?? null,
    })),
    decoder: feature.decoder ?? null,
  };
}

/** A data script: `window.NAME = …` or a call, JSON inside (valid JavaScript). */
const script = (body: string) => `/* rank1 dashboard data */\n${body}\n`;

/** Bundles a Preact page into one classic (non-module) script: module scripts do not load from file://. */
export async function bundleDashboardApp(entry = 'main.tsx'): Promise<string> {
  const result = await esbuild.build({
    entryPoints: [path.join(APP_DIR, entry)],
    bundle: true, format: 'iife', platform: 'browser', target: 'es2020', minify: true, write: false,
    jsx: 'automatic', jsxImportSource: 'preact', logLevel: 'silent', legalComments: 'none',
  });
  return result.outputFiles[0]!.text;
}

export async function buildDashboard(options: DashboardOptions): Promise<{ features: number; chunks: number; dir: string }> {
  if (options.features.length === 0) throw new Error('dashboard: give at least one --features file');
  const features = await readFeatureFiles(options.features) as (FeatureTopExamples & { decoder?: { hook: string; weight: number }[] })[];
  const explanations = options.explanations ? await readExplanations(options.explanations) : new Map<string, ExplanationLine>();
  const ablation = options.ablation ? await readAblation(options.ablation) : null;
  const adapterKl = new Map((ablation?.groups ?? []).filter((g) => g.kind === 'adapter').map((g) => [g.adapters[0]!, g.kl]));

  const summaries: FeatureSummary[] = features.map((f, i) => {
    const e = explanations.get(f.feature);
    const kind = featureKind(f.feature);
    return {
      name: f.feature, kind, ...featurePlace(f.feature),
      active: f.active_count, max: f.max,
      explanation: e?.explanation ?? null, class: e?.class ?? null, category: e?.category ?? null,
      kl: kind === 'adapter' ? adapterKl.get(f.hook) ?? null : null,
      chunk: Math.floor(i / CHUNK),
    };
  });
  const chunks = Math.ceil(features.length / CHUNK);
  const index: DashboardIndex = {
    title: options.title ?? 'rank1 features',
    generated: new Date().toISOString(),
    sources: [...options.features, ...(options.explanations ? [options.explanations] : []), ...(options.ablation ? [options.ablation] : [])].map((f) => path.basename(f)),
    chunks,
    features: summaries,
    ablation: ablation ? await ablationOverview(ablation) : null,
    playground: options.model !== undefined,
  };

  // Written into a fresh folder beside the target, then swapped in: a failed build leaves the old site.
  const out = path.resolve(options.out);
  await refuseForeignFolder(out);
  await writeFolderAtomic(out, async (staging) => {
    await fs.mkdir(path.join(staging, 'data'), { recursive: true });
    await fs.writeFile(path.join(staging, 'app.js'), await bundleDashboardApp());
    if (options.model) await writePlayground(staging, options.model, options.adapter);
    await fs.copyFile(path.join(APP_DIR, 'index.html'), path.join(staging, 'index.html'));
    await fs.copyFile(path.join(APP_DIR, 'style.css'), path.join(staging, 'style.css'));
    await fs.writeFile(path.join(staging, 'data/index.js'), script(`window.RANK1_DASHBOARD_INDEX = ${JSON.stringify(index)};`));
    for (let c = 0; c < chunks; c++) {
      const details = features.slice(c * CHUNK, (c + 1) * CHUNK).map(detail);
      await fs.writeFile(path.join(staging, `data/${chunkFile(c)}`), script(`window.rank1DashboardChunk(${c}, ${JSON.stringify(details)});`));
    }
  });
  return { features: features.length, chunks, dir: out };
}

export const chunkFile = (chunk: number) => `features-${String(chunk).padStart(3, '0')}.js`;

/** The output folder must be new, empty, or a dashboard this command wrote (it is replaced whole). */
async function refuseForeignFolder(out: string): Promise<void> {
  const entries = await fs.readdir(out).catch(() => null);
  if (entries === null || entries.length === 0) return;
  const ours = entries.includes('index.html') && await fs.access(path.join(out, 'data/index.js')).then(() => true, () => false);
  if (!ours) throw new Error(`dashboard: --out ${out} holds other files (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', …' : ''}); give a new or empty folder, or a dashboard folder to replace`);
}

/**
 * The playground page: its Preact script, the engine's worker script as a string (started from a Blob, so
 * file:// works), and the model folder's files embedded (base64 for the weights) in data/model.js.
 */
async function writePlayground(dir: string, modelDir: string, adapterDir?: string): Promise<void> {
  const read = async (file: string, optional = false): Promise<Buffer | undefined> => {
    try {
      return await fs.readFile(file);
    } catch (error) {
      if (optional) return undefined;
      throw new Error(`dashboard --model/--adapter: cannot read ${file}: ${(error as Error).message}`);
    }
  };
  const json = async (file: string, optional = false) => {
    const bytes = await read(file, optional);
    if (!bytes) return undefined;
    try {
      return JSON.parse(bytes.toString('utf8')) as unknown;
    } catch {
      throw new Error(`${file}: not JSON`);
    }
  };
  const files: EmbeddedModelFiles = {
    config: await json(path.join(modelDir, 'config.json')),
    weights: (await read(path.join(modelDir, 'model.safetensors')))!.toString('base64'),
    tokenizer: await json(path.join(modelDir, 'tokenizer.json')),
    tokenizerConfig: await json(path.join(modelDir, 'tokenizer_config.json'), true),
    generationConfig: await json(path.join(modelDir, 'generation_config.json'), true),
    chatTemplate: (await read(path.join(modelDir, 'chat_template.jinja'), true))?.toString('utf8'),
    ...(adapterDir ? {
      adapterConfig: await json(path.join(adapterDir, 'adapter_config.json')),
      adapterWeights: (await read(path.join(adapterDir, 'adapter_model.safetensors')))!.toString('base64'),
    } : {}),
  };
  await fs.writeFile(path.join(dir, 'data/model.js'), script(`window.RANK1_MODEL_FILES = ${JSON.stringify(files)};`));
  const worker = await bundleBrowserEngine({ entry: path.join(import.meta.dirname, '../browser/playground-worker.ts'), globalName: 'rank1Worker' });
  await fs.writeFile(path.join(dir, 'data/worker.js'), script(`window.RANK1_WORKER_SOURCE = ${JSON.stringify(worker)};`));
  await fs.writeFile(path.join(dir, 'playground.js'), await bundleDashboardApp('playground.tsx'));
  await fs.copyFile(path.join(APP_DIR, 'playground.html'), path.join(dir, 'playground.html'));
}
