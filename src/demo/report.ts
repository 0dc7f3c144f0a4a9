// report.html: one page that ties the demo's numbers, figures and files together. Rendered from the Jinja
// template beside this file (report.html.jinja) with @huggingface/jinja. That renderer has no autoescaping,
// so the context is escaped here, whole: every string in it is HTML-escaped before rendering and the template
// never marks anything safe. Figures are embedded as data: URIs of the SVG files the steps wrote (an <img>
// each, so the SVGs' own ids cannot collide in one document).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Template } from '@huggingface/jinja';
import { ABLATED_ROLE_TITLES, ROLE_TITLES } from '../eval/compare.ts';
import { PROJECTIONS, shortHookLabel } from '../model/hooks.ts';
import { PAPER_LORA } from '../model/lora.ts';
import type { AblationResult } from '../interp/ablate.ts';
import { table2Rows } from '../interp/figures.ts';
import type { FeatureTopExamples, TopExample } from '../interp/topk.ts';
import type { SaeFeature } from '../interp/sae-features.ts';
import { DEMO_ABLATIONS, DEMO_FILES, DEMO_PATHS, type DemoSummary } from './folder.ts';
import { formatSeconds } from './progress.ts';
import { demoTrainSettings } from './settings.ts';

export const REPORT_TEMPLATE = path.join(import.meta.dirname, 'report.html.jinja');

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\'': '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

/** Every string of `value` (deeply) HTML-escaped; numbers, booleans and null as they are. */
export function escapeDeep(value: unknown): unknown {
  if (typeof value === 'string') return escapeHtml(value);
  if (Array.isArray(value)) return value.map(escapeDeep);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, escapeDeep(v)]));
  return value;
}

export interface ReportInput {
  /** The demo folder (links are relative to it). */
  out: string;
  summary: DemoSummary;
  /** Top-k features of the adapters with the largest ablation KL. */
  topFeatures: { feature: FeatureTopExamples; kl: number }[];
  /** SAE latents to show. */
  latents: SaeFeature[];
  /** The commands that label the features when autointerp did not run. */
  autointerpHint: string[];
}

const exists = (file: string) => fs.stat(file).then((s) => s.isFile(), () => false);

const percent = (x: number) => `${(100 * x).toFixed(1)}%`;
const num = (x: number, digits = 3) => (Number.isFinite(x) ? (Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(digits) : x.toExponential(2)) : 'n/a');

/** A context as token segments, `window` tokens either side of the activating one (marked); newlines shown as ↵. */
function contextSegments(example: TopExample, window = 12): { text: string; mark: boolean }[] {
  const from = Math.max(0, example.center - window);
  return example.context_tokens.slice(from, example.center + window + 1)
    .map((token, i) => ({ text: token.replace(/\n/g, '↵'), mark: from + i === example.center }));
}

/** A setting as the paper writes it: 1e-4, 0.95, 16. */
const setting = (x: number) => (x !== 0 && Math.abs(x) < 1e-3 ? x.toExponential() : String(x));

/** How both trainings ran, from the settings they ran with (demoTrainSettings, PAPER_TRAINING, PAPER_LORA). */
function trainingSettingsText(summary: DemoSummary): string {
  const lora = demoTrainSettings(summary.sizes, 'adapter', summary.seed, 0);
  const full = demoTrainSettings(summary.sizes, 'full', summary.seed, 0);
  return `Rank-1 LoRA on all ${PROJECTIONS.length} projections of every layer: ${summary.training?.lora.steps} steps (${lora.epochs} epoch${lora.epochs === 1 ? '' : 's'}, global batch ${lora.batchSize}) at lr ${lora.lr}; `
    + `full finetune: ${summary.training?.full.steps} steps at lr ${full.lr}; otherwise the paper's settings (AdamW ${setting(lora.betas[0])}/${setting(lora.betas[1])}, `
    + `weight decay ${setting(lora.weightDecay)}, cosine with ${setting(100 * lora.warmupRatio)}% warmup, clip ${setting(lora.maxGradNorm)}, `
    + `${PAPER_LORA.useRslora ? 'rsLoRA' : 'LoRA'} alpha ${setting(lora.loraAlpha)}).`;
}

/** The template's context (not yet escaped). */
export async function reportContext(input: ReportInput): Promise<Record<string, unknown>> {
  const { out, summary } = input;
  const at = (rel: string) => path.join(out, rel);
  const figure = async (rel: string, title: string, caption: string) => {
    const file = at(rel);
    if (!(await exists(file))) return null;
    const svg = await fs.readFile(file);
    return { title, caption, file: rel, src: `data:image/svg+xml;base64,${svg.toString('base64')}` };
  };
  const link = async (rel: string, label: string, what: string) => ((await exists(at(rel))) ? { href: rel, label, what } : null);
  const present = <T>(items: (T | null)[]) => items.filter((x): x is T => x !== null);

  const t1 = summary.table1;
  const table1 = t1 && {
    problems: t1.problems,
    rows: (['base', 'lora', 'full'] as const).map((role) => ({
      name: ROLE_TITLES[role], accuracy: percent(t1[role].accuracy), correct: t1[role].correct, n: t1[role].n,
      tokens: t1[role].meanTokens.toFixed(0), file: t1[role].file,
    })),
    recovery: t1.recovery_percent === null ? 'n/a' : `${t1.recovery_percent.toFixed(1)}%`,
  };
  // The paper's Table 2: accuracy with one kind of adapter removed, as a share of the rank-1 gain.
  const table2Accuracy = t1?.table2 && {
    rows: DEMO_ABLATIONS.map((ablation) => {
      const row = t1.table2[ablation];
      return {
        name: ABLATED_ROLE_TITLES[ablation === 'mlp' ? 'mlp_ablated' : 'attn_ablated'], accuracy: percent(row.accuracy), correct: row.correct, n: row.n,
        tokens: row.meanTokens.toFixed(0), kept: row.gain_kept_percent === null ? 'undefined (rank 1 = base)' : `${row.gain_kept_percent.toFixed(1)}%`, file: row.file,
      };
    }),
  };
  const sizes = summary.sizes;
  const settings = [
    `World: the base's own (version ${summary.world?.version}, seed ${summary.world?.seed}), ${summary.world?.reasoningRows} reasoning traces; the first ${sizes.heldout} of its ${summary.world?.heldoutProblems} held-out problems, greedy, up to ${sizes.evalMaxTokens} tokens, ${sizes.evalBatch} decoded together.`,
    trainingSettingsText(summary),
    `Ablation: ${sizes.ablationExamples} traces drawn with seed ${summary.seed} among those over ${sizes.ablationMinTokens} tokens. Store: the first ${sizes.extractTraces} traces with ${sizes.mlpNeurons} MLP neurons per layer. SAE: BatchTopK, k ${sizes.sae.k}, ${sizes.sae.expansion}× latents, batch ${sizes.sae.batch}, lr ${sizes.sae.lr}, ${sizes.sae.epochs} epochs.`,
  ];

  const ablation = JSON.parse(await fs.readFile(at(DEMO_PATHS.ablation('result')), 'utf8').catch(() => 'null')) as AblationResult | null;
  const table2 = ablation && [
    { name: 'none (full model)', count: 0, kl: '0', ce: num(ablation.full_ce), dce: '0' },
    ...table2Rows(ablation).map((row) => ({ name: row.label, count: row.adapters, kl: num(row.kl), ce: num(row.ce), dce: num(row.ce - ablation.full_ce) })),
  ];

  const features = input.topFeatures.map(({ feature, kl }) => ({
    name: feature.feature, kl: num(kl), active: feature.active_count, max: num(feature.max),
    examples: feature.examples.slice(0, 1).map((e) => ({ value: num(e.value), segments: contextSegments(e) })),
  }));
  const latents = input.latents.map((latent) => ({
    name: latent.feature, active: latent.active_count, max: num(latent.max),
    decoder: latent.decoder.slice(0, 4).map((d) => `${shortHookLabel(d.hook)} ${d.weight >= 0 ? '+' : '−'}${Math.abs(d.weight).toFixed(2)}`).join(', '),
    examples: latent.examples.slice(0, 1).map((e) => ({ value: num(e.value), segments: contextSegments(e) })),
  }));

  const figures = present([
    await figure(DEMO_PATHS.ablation('heatmap'), 'Figure 1: zero-ablating single rank-1 adapters', 'KL(full ‖ ablated) per adapter, projection × layer (the paper\'s Figure 1 at toy scale).'),
    await figure(DEMO_PATHS.ablation('klByLayer'), 'Zero-ablating one layer\'s adapters', 'KL(full ‖ ablated) when all 7 adapters of a layer contribute nothing.'),
  ]);
  const trainingFigures = present([
    await figure(DEMO_PATHS.loraLossCurve, 'Rank-1 training loss', 'Mean cross-entropy per scored token of each optimizer step.'),
    await figure(DEMO_PATHS.fullLossCurve, 'Full finetune training loss', 'The same data and schedule, every weight trained.'),
  ]);
  const saeFigures = present([await figure(DEMO_PATHS.saeLossCurve, 'SAE reconstruction error', 'Mean ‖x − x̂‖² per token of each step (log scale).')]);
  const interpretFigures = present([
    await figure(DEMO_PATHS.interpret('classes'), 'Figure 2: feature classes', 'Share of specific / broad / polysemantic features per kind, bootstrap 95% intervals.'),
    await figure(DEMO_PATHS.interpret('densities'), 'Figure 3: category densities', 'Each category\'s share of summed activation.'),
  ]);

  const dashboard = await link(DEMO_PATHS.dashboard, DEMO_PATHS.dashboard, 'the feature dashboard: browse every adapter direction, MLP neuron and SAE latent');
  const links = present([
    await link(DEMO_FILES.table1, DEMO_FILES.table1, 'Table 1: accuracies, counts, % recovery'),
    await link(DEMO_PATHS.evalResults('base'), DEMO_PATHS.evalResults('base'), 'base model: one row per held-out problem (output, extracted answer, correct)'),
    await link(DEMO_PATHS.evalResults('lora'), DEMO_PATHS.evalResults('lora'), 'rank-1 LoRA results'),
    await link(DEMO_PATHS.evalResults('full'), DEMO_PATHS.evalResults('full'), 'full finetune results'),
    ...await Promise.all(DEMO_ABLATIONS.map((a) => link(DEMO_PATHS.ablatedEvalResults(a), DEMO_PATHS.ablatedEvalResults(a), `rank-1 LoRA results with its ${a === 'mlp' ? 'MLP' : 'attention'} adapters removed (Table 2)`))),
    await link(DEMO_PATHS.loraConfig, `${DEMO_FILES.lora}/`, 'the rank-1 adapter (PEFT folder), metrics.jsonl, loss-curve.svg'),
    await link(DEMO_PATHS.fullConfig, `${DEMO_FILES.full}/`, 'the fully finetuned model (Hugging Face folder)'),
    await link(DEMO_PATHS.ablation('result'), DEMO_PATHS.ablation('result'), 'KL and cross-entropy of every ablated group, per trace'),
    await link(DEMO_PATHS.ablation('table2'), DEMO_PATHS.ablation('table2'), 'KL / cross-entropy when adapters are ablated, as Markdown'),
    await link(DEMO_PATHS.storeIndex, DEMO_PATHS.storeIndex, 'the activation store (index; shards beside it)'),
    await link(DEMO_FILES.storeTraces, DEMO_FILES.storeTraces, 'the traces the store was extracted from'),
    await link(DEMO_PATHS.topkFeatures, DEMO_PATHS.topkFeatures, 'max-activating examples of every adapter direction and MLP neuron'),
    await link(DEMO_PATHS.saeMetrics, DEMO_PATHS.saeMetrics, 'SAE metrics: held-out FVU, L0, live and dead latents'),
    await link(DEMO_PATHS.saeConfig, `${DEMO_FILES.sae}/`, 'the SAE (sae.safetensors, config.json, metrics.jsonl)'),
    await link(DEMO_PATHS.saeFeatures, DEMO_PATHS.saeFeatures, 'max-activating examples and decoder rows of every SAE latent that fires'),
    await link(DEMO_PATHS.interpret('explanations'), DEMO_PATHS.interpret('explanations'), 'autointerp: explanation, class and category of every feature'),
    await link(DEMO_PATHS.interpret('categories'), DEMO_PATHS.interpret('categories'), 'autointerp categories'),
    await link(DEMO_PATHS.world, `${DEMO_FILES.world}/`, 'the toy world (traces, held-out problems, tokenizer)'),
    await link(DEMO_FILES.manifest, DEMO_FILES.manifest, 'this run: settings, timings and headline numbers'),
    await link(DEMO_FILES.log, DEMO_FILES.log, 'the run\'s detailed log'),
  ]);

  return {
    title: `rank1 demo: Rank-1 LoRAs on the toy world`,
    date: summary.date,
    mode: summary.mode,
    seed: summary.seed,
    backend: summary.backend.reason,
    machine: `${summary.machine.cpu ?? 'unknown CPU'}, ${summary.machine.cores} cores, Node ${summary.machine.node}`,
    total: formatSeconds(summary.totalSeconds),
    quick: summary.mode === 'quick',
    table1,
    table2Accuracy,
    settings,
    trainingFigures,
    figures,
    table2,
    topAdapters: (summary.ablation?.topAdapters ?? []).map((a) => ({ name: a.name, kl: num(a.kl) })),
    ablation: summary.ablation && { examples: summary.ablation.examples, tokens: summary.ablation.tokens },
    store: summary.store,
    topk: summary.topk,
    features,
    sae: summary.sae && {
      fvu: num(summary.sae.fvu), l0: summary.sae.l0.toFixed(1), live: summary.sae.live, dead: summary.sae.dead, steps: summary.sae.steps,
      firing: summary.sae.latentsFiring, tokens: summary.sae.trainTokens,
    },
    saeFigures,
    latents,
    autointerp: summary.autointerp,
    interpretFigures,
    autointerpCommand: input.autointerpHint.join('\n'),
    dashboard,
    links,
    timings: summary.timings.map((t) => ({
      step: t.step, summary: t.summary,
      seconds: t.alongside ? `${t.alongside.seconds.toFixed(1)} (second process, alongside)` : t.seconds.toFixed(1),
    })),
  };
}

/** Renders report.html from the template (HTML-escaped context) and writes it. */
export async function writeReport(file: string, input: ReportInput): Promise<void> {
  const template = new Template(await fs.readFile(REPORT_TEMPLATE, 'utf8'));
  const html = template.render(escapeDeep(await reportContext(input)) as Record<string, unknown>);
  await fs.writeFile(file, html);
}
