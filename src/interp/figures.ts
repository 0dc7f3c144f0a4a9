// Figures of the analysis, drawn by Vega-Lite and rendered headless to SVG (no browser), and the tables as
// Markdown: KL by layer, the 7 × L adapter heat map (the paper's Figure 1) and MLP vs attention (Table 2).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { PROJECTIONS, parseAdapterHookName } from '../model/hooks.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { renderSvg } from '../train/plot.ts';
import type { AblationGroupResult, AblationKind, AblationResult } from './ablate.ts';

export { renderSvg };

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

/** Bar chart: KL(full ‖ ablated) when each layer's adapters are zeroed. */
export function klByLayerSpec(result: AblationResult): TopLevelSpec {
  const values = result.groups.filter((g) => g.kind === 'layer').map((g) => ({ layer: Number(g.name.replace('layer ', '')), kl: g.kl }));
  return {
    $schema: SCHEMA,
    title: { text: 'Zero-ablating one layer\'s rank-1 adapters', subtitle: `KL(full ‖ ablated), mean over positions then ${result.examples.length} sequences` },
    width: Math.max(240, 24 * values.length),
    height: 240,
    data: { values },
    mark: { type: 'bar', tooltip: true },
    encoding: {
      x: { field: 'layer', type: 'ordinal', title: 'layer' },
      y: { field: 'kl', type: 'quantitative', title: 'KL (nats)' },
    },
  };
}

/** Heat map: one cell per adapter (projection × layer), the colour its ablation's KL. */
export function adapterHeatmapSpec(result: AblationResult): TopLevelSpec {
  const values = result.groups.filter((g) => g.kind === 'adapter').map((g) => {
    const { layer, projection } = parseAdapterHookName(g.name)!;
    return { layer, projection, kl: g.kl };
  });
  const layers = new Set(values.map((v) => v.layer)).size;
  return {
    $schema: SCHEMA,
    title: { text: 'Zero-ablating single rank-1 adapters', subtitle: 'KL(full ‖ ablated) per adapter' },
    width: Math.max(200, 18 * layers),
    height: 7 * 24,
    data: { values },
    mark: { type: 'rect', tooltip: true },
    encoding: {
      x: { field: 'layer', type: 'ordinal', title: 'layer' },
      y: { field: 'projection', type: 'nominal', title: null, sort: [...PROJECTIONS] },
      color: { field: 'kl', type: 'quantitative', title: 'KL (nats)', scale: { scheme: 'viridis' } },
    },
  };
}

const fmt = (x: number) => (x === 0 ? '0' : Math.abs(x) >= 0.01 ? x.toFixed(4) : x.toExponential(3));

/** Table 2's rows: the adapters zeroed together, by kind. */
const TABLE2_LABELS: Partial<Record<AblationKind, string>> = { mlp: 'MLP (gate, up, down)', attention: 'attention (q, k, v, o)', all: 'all' };

export interface Table2Row {
  label: string;
  /** Adapters zeroed. */
  adapters: number;
  kl: number;
  ce: number;
}

/**
 * The paper's Table 2: the MLP adapters, the attention adapters and all adapters zeroed (those the result has),
 * each with its KL(full ‖ ablated) and cross-entropy. table2.md, the demo's report and the dashboard's overview
 * are all made from these rows.
 */
export function table2Rows(result: AblationResult): Table2Row[] {
  return result.groups.filter((g) => TABLE2_LABELS[g.kind] !== undefined)
    .map((g) => ({ label: TABLE2_LABELS[g.kind]!, adapters: g.adapters.length, kl: g.kl, ce: g.ce }));
}

/** The single adapters whose ablation moves the output most, largest KL first. */
export function largestAdapters(result: AblationResult, count: number): AblationGroupResult[] {
  return result.groups.filter((g) => g.kind === 'adapter').sort((a, b) => b.kl - a.kl).slice(0, count);
}

/** The paper's Table 2 layout: MLP adapters vs attention adapters vs all, with KL and cross-entropy. */
export function ablationTableMarkdown(result: AblationResult): string {
  const lines = [
    `Zero-ablation over ${result.examples.length} sequences (${result.tokens} tokens); full model cross-entropy ${fmt(result.full_ce)} nats.`,
    '',
    '| adapters zeroed | count | KL(full ‖ ablated) | cross-entropy | Δ cross-entropy |',
    '|---|---:|---:|---:|---:|',
    `| none (full model) | 0 | 0 | ${fmt(result.full_ce)} | 0 |`,
    ...table2Rows(result).map((row) => `| ${row.label} | ${row.adapters} | ${fmt(row.kl)} | ${fmt(row.ce)} | ${fmt(row.ce - result.full_ce)} |`),
  ];
  const top = largestAdapters(result, 5);
  if (top.length) {
    lines.push('', 'Largest single adapters:', '', '| adapter | KL | Δ cross-entropy |', '|---|---:|---:|');
    for (const g of top) lines.push(`| ${g.name} | ${fmt(g.kl)} | ${fmt(g.ce - result.full_ce)} |`);
  }
  return `${lines.join('\n')}\n`;
}

/** The files `rank1 ablate` writes into its folder. */
export const ABLATION_FILES = {
  result: 'ablation.json',
  klByLayer: 'kl-by-layer.svg',
  heatmap: 'adapter-heatmap.svg',
  table2: 'table2.md',
} as const;

/**
 * `rank1 ablate`'s outputs in `dir`: ablation.json (the result plus `metadata`: model, data, seed, …),
 * kl-by-layer.svg, adapter-heatmap.svg (Figure 1) and table2.md, each written atomically. Returns Table 2.
 */
export async function writeAblationOutputs(dir: string, result: AblationResult, metadata: Record<string, unknown>): Promise<string> {
  const write = (name: string, text: string) => writeFileAtomic(path.join(dir, name), async (handle) => {
    await handle.writeFile(text, 'utf8');
  });
  await fs.mkdir(dir, { recursive: true });
  await write(ABLATION_FILES.result, `${JSON.stringify({ ...result, ...metadata }, null, 2)}\n`);
  await write(ABLATION_FILES.klByLayer, await renderSvg(klByLayerSpec(result)));
  await write(ABLATION_FILES.heatmap, await renderSvg(adapterHeatmapSpec(result)));
  const table = ablationTableMarkdown(result);
  await write(ABLATION_FILES.table2, table);
  return table;
}
