// The autointerpretation figures, as numbers (JSON) and Vega-Lite SVG:
//  Figure 2: the share of features in each class (0 specific, 1 broad, 2 polysemantic) for adapter directions,
//            MLP neurons and SAE latents, with percentile-bootstrap 95% intervals (features resampled);
//  Figure 3: category activation densities: each feature's summed activation (|mean| × active count, from
//            features.jsonl), summed per category and normalised to 1 within each kind.
// Plus the scoring summary: mean balanced accuracy per method, kind and class.
import * as path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { renderSvg } from '../train/plot.ts';
import { writeFileAtomic, writeJsonAtomic } from '../io/atomic.ts';
import { Random } from '../tensor/random.ts';
import type { FeatureTopExamples } from './topk.ts';
import type { FeatureKind } from '../model/hooks.ts';
import { INTERPRET_FILES, type ExplanationRow, type ScoreRow } from './autointerp-types.ts';

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const CLASS_NAMES = ['0 specific', '1 broad', '2 polysemantic'] as const;
const KIND_NAMES: Record<FeatureKind, string> = { adapter: 'adapter directions', mlp: 'MLP neurons', sae: 'SAE latents', other: 'other features' };

export interface ShareInterval {
  share: number;
  low: number;
  high: number;
}

/** Share of `labels` equal to `value` with a percentile-bootstrap (1 − alpha) interval over `reps` resamples. */
export function bootstrapShare(labels: readonly number[], value: number, reps = 2000, seed = 0, alpha = 0.05): ShareInterval {
  const n = labels.length;
  if (n === 0) return { share: 0, low: 0, high: 0 };
  const hits = labels.filter((l) => l === value).length;
  const rng = new Random(seed);
  const shares = new Float64Array(reps);
  for (let r = 0; r < reps; r++) {
    let count = 0;
    for (let i = 0; i < n; i++) if (labels[rng.int(n)] === value) count++;
    shares[r] = count / n;
  }
  shares.sort();
  const at = (q: number) => shares[Math.min(reps - 1, Math.max(0, Math.floor(q * reps)))]!;
  return { share: hits / n, low: at(alpha / 2), high: at(1 - alpha / 2) };
}

export interface ClassShareRow extends ShareInterval {
  kind: FeatureKind;
  kindName: string;
  class: number;
  className: string;
  features: number;
}

export function classShares(rows: readonly ExplanationRow[], seed = 0): ClassShareRow[] {
  const out: ClassShareRow[] = [];
  for (const kind of ['adapter', 'mlp', 'sae', 'other'] as FeatureKind[]) {
    const labels = rows.filter((r) => r.kind === kind && r.class !== null).map((r) => r.class!);
    if (labels.length === 0) continue;
    for (const cls of [0, 1, 2]) {
      out.push({ kind, kindName: KIND_NAMES[kind], class: cls, className: CLASS_NAMES[cls]!, features: labels.length, ...bootstrapShare(labels, cls, 2000, seed + cls) });
    }
  }
  return out;
}

export interface CategoryDensityRow {
  kind: FeatureKind;
  kindName: string;
  category: string;
  density: number;
  features: number;
}

export function categoryDensities(rows: readonly ExplanationRow[], features: readonly FeatureTopExamples[]): CategoryDensityRow[] {
  const mass = new Map(features.map((f) => [f.feature, Math.abs(f.mean) * f.active_count]));
  const out: CategoryDensityRow[] = [];
  for (const kind of ['adapter', 'mlp', 'sae', 'other'] as FeatureKind[]) {
    const sums = new Map<string, { mass: number; features: number }>();
    for (const row of rows) {
      if (row.kind !== kind || row.category === null) continue;
      const entry = sums.get(row.category) ?? { mass: 0, features: 0 };
      entry.mass += mass.get(row.feature) ?? 0;
      entry.features++;
      sums.set(row.category, entry);
    }
    const total = [...sums.values()].reduce((a, b) => a + b.mass, 0);
    for (const [category, { mass: m, features: count }] of sums) {
      out.push({ kind, kindName: KIND_NAMES[kind], category, density: total > 0 ? m / total : 0, features: count });
    }
  }
  return out;
}

export interface ScoreSummaryRow {
  method: string;
  kind: FeatureKind;
  class: number | null;
  features: number;
  meanBalancedAccuracy: number | null;
}

export function scoreSummary(scores: readonly ScoreRow[]): ScoreSummaryRow[] {
  const groups = new Map<string, ScoreRow[]>();
  for (const s of scores) {
    if (s.balanced_accuracy === null) continue;
    for (const cls of [s.class, 'all'] as const) {
      const key = JSON.stringify([s.method, s.kind, cls]);
      groups.set(key, [...(groups.get(key) ?? []), s]);
    }
  }
  return [...groups].map(([key, list]) => {
    const [method, kind, cls] = JSON.parse(key) as [string, FeatureKind, number | 'all' | null];
    return { method, kind, class: cls === 'all' ? null : cls, features: list.length, meanBalancedAccuracy: list.reduce((a, s) => a + s.balanced_accuracy!, 0) / list.length };
  });
}

/** Figure 2: class shares per kind with 95% intervals. */
export function classShareSpec(rows: readonly ClassShareRow[]): TopLevelSpec {
  return {
    $schema: SCHEMA,
    title: { text: 'Feature classes from autointerpretation', subtitle: 'share of explained features, bootstrap 95% intervals' },
    data: { values: rows.map((r) => ({ ...r })) },
    width: 120,
    height: 220,
    facet: { column: { field: 'className', type: 'nominal', title: null } },
    spec: {
      layer: [
        { mark: { type: 'bar', tooltip: true }, encoding: { x: { field: 'kindName', type: 'nominal', title: null }, y: { field: 'share', type: 'quantitative', title: 'share of features', scale: { domain: [0, 1] } }, color: { field: 'kindName', type: 'nominal', title: null } } },
        { mark: { type: 'rule' }, encoding: { x: { field: 'kindName', type: 'nominal' }, y: { field: 'low', type: 'quantitative' }, y2: { field: 'high' } } },
      ],
    },
  } as TopLevelSpec;
}

/** Figure 3: category activation densities per kind. */
export function categoryDensitySpec(rows: readonly CategoryDensityRow[]): TopLevelSpec {
  return {
    $schema: SCHEMA,
    title: { text: 'Category activation densities', subtitle: 'summed activations of each category\'s features, normalised within each kind' },
    data: { values: rows.map((r) => ({ ...r })) },
    width: 260,
    height: { step: 18 },
    mark: { type: 'bar', tooltip: true },
    encoding: {
      y: { field: 'category', type: 'nominal', sort: '-x', title: null },
      x: { field: 'density', type: 'quantitative', title: 'share of activation' },
      color: { field: 'kindName', type: 'nominal', title: null },
      yOffset: { field: 'kindName' },
    },
  } as TopLevelSpec;
}

/**
 * `rank1 interpret`'s figures in `dir`: figures.json (class shares, category densities, score summary),
 * classes.svg (Figure 2) and category-densities.svg (Figure 3) when there is something to draw.
 */
export async function writeInterpretFigures(
  dir: string, explanations: readonly ExplanationRow[], features: readonly FeatureTopExamples[], scores: readonly ScoreRow[], seed: number,
): Promise<{ shares: ClassShareRow[]; densities: CategoryDensityRow[]; summary: ScoreSummaryRow[] }> {
  const shares = classShares(explanations, seed);
  const densities = categoryDensities(explanations, features);
  const summary = scoreSummary(scores);
  await writeJsonAtomic(path.join(dir, INTERPRET_FILES.figures), { class_shares: shares, category_densities: densities, scores: summary });
  if (shares.length) await writeFileAtomic(path.join(dir, INTERPRET_FILES.classes), await renderSvg(classShareSpec(shares)));
  if (densities.length) await writeFileAtomic(path.join(dir, INTERPRET_FILES.densities), await renderSvg(categoryDensitySpec(densities)));
  return { shares, densities, summary };
}
