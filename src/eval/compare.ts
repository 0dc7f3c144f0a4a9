// The paper's Table 1 from results files: rows Base / Rank-1 LoRA / Full finetune, a column per benchmark
// (accuracy %), and a last row `% recovery = (lora − base) / (full − base)`.
//
// A comparison spec names the three runs of one benchmark: `[BENCH:]base=FILE,lora=FILE,full=FILE`. The
// benchmark is read from the rows themselves (each row records it) unless the prefix names it; pass one spec
// per benchmark. A role may be left out (its cells and the recovery show as n/a).
import { BENCHMARKS, BENCHMARK_TITLES, isBenchmarkName, type BenchmarkName } from './benchmarks.ts';
import { readResults, summarize, type ResultRow, type ResultsSummary } from './results.ts';

export const ROLES = ['base', 'lora', 'full'] as const;
export type Role = (typeof ROLES)[number];
export const ROLE_TITLES: Record<Role, string> = { base: 'Base', lora: 'Rank-1 LoRA', full: 'Full finetune' };

export interface CompareSpec {
  bench?: BenchmarkName;
  files: Partial<Record<Role, string>>;
}

export function parseCompareSpec(spec: string): CompareSpec {
  let rest = spec.trim();
  let bench: BenchmarkName | undefined;
  const prefix = /^([a-z0-9]+):/.exec(rest);
  if (prefix) {
    if (!isBenchmarkName(prefix[1]!)) throw new Error(`--compare "${spec}": unknown benchmark "${prefix[1]}" (one of ${BENCHMARKS.join(', ')})`);
    bench = prefix[1];
    rest = rest.slice(prefix[0].length);
  }
  const files: Partial<Record<Role, string>> = {};
  for (const part of rest.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const eq = part.indexOf('=');
    const role = part.slice(0, eq).trim();
    const file = part.slice(eq + 1).trim();
    if (eq <= 0 || file === '') throw new Error(`--compare "${spec}": expected ROLE=FILE items, got "${part}"`);
    if (!(ROLES as readonly string[]).includes(role)) throw new Error(`--compare "${spec}": unknown role "${role}" (one of ${ROLES.join(', ')})`);
    if (files[role as Role] !== undefined) throw new Error(`--compare "${spec}": ${role} is given twice`);
    files[role as Role] = file;
  }
  if (Object.keys(files).length === 0) throw new Error(`--compare "${spec}": expected [BENCH:]base=FILE,lora=FILE,full=FILE`);
  return bench === undefined ? { files } : { bench, files };
}

export interface CompareCell extends ResultsSummary {
  file: string;
}

export interface CompareTable {
  /** Benchmarks given, in Table 1's order. */
  benches: BenchmarkName[];
  cells: Record<Role, Partial<Record<BenchmarkName, CompareCell>>>;
  /** Percent; null where a run is missing or full == base. */
  recovery: Partial<Record<BenchmarkName, number | null>>;
  warnings: string[];
}

/** `(lora − base) / (full − base)` in percent, or null when undefined (full == base). */
export function recoveryPercent(base: ResultsSummary, lora: ResultsSummary, full: ResultsSummary): number | null {
  // Exact rational comparison: accuracies are correct / n.
  if (full.correct * base.n === base.correct * full.n) return null;
  return (100 * (lora.accuracy - base.accuracy)) / (full.accuracy - base.accuracy);
}

function benchOfRows(rows: readonly ResultRow[], file: string): BenchmarkName | undefined {
  const benches = [...new Set(rows.map((r) => r.bench))];
  if (benches.length > 1) throw new Error(`${file}: mixes results of ${benches.join(' and ')}`);
  return benches[0];
}

export async function buildCompareTable(specs: readonly CompareSpec[]): Promise<CompareTable> {
  const cells: CompareTable['cells'] = { base: {}, lora: {}, full: {} };
  const recovery: CompareTable['recovery'] = {};
  const warnings: string[] = [];
  const seen = new Set<BenchmarkName>();
  for (const spec of specs) {
    const loaded: Partial<Record<Role, { file: string; rows: ResultRow[] }>> = {};
    let bench = spec.bench;
    for (const role of ROLES) {
      const file = spec.files[role];
      if (file === undefined) continue;
      const { rows, truncatedTail } = await readResults(file);
      if (rows.length === 0) throw new Error(`${file}: no results (missing or empty file)`);
      if (truncatedTail) warnings.push(`${file}: last line is cut off (run interrupted while writing); ignored`);
      const fileBench = benchOfRows(rows, file);
      if (bench !== undefined && fileBench !== bench) throw new Error(`${file}: holds ${fileBench} results, but the comparison is for ${bench}`);
      bench = fileBench;
      loaded[role] = { file, rows };
    }
    if (bench === undefined) throw new Error('--compare: no results files');
    if (seen.has(bench)) throw new Error(`--compare: ${bench} is given twice`);
    seen.add(bench);
    for (const role of ROLES) {
      const entry = loaded[role];
      if (entry) cells[role][bench] = { ...summarize(entry.rows), file: entry.file };
    }
    const present = ROLES.filter((role) => loaded[role]);
    const indexSets = present.map((role) => loaded[role]!.rows.map((r) => r.index).sort((a, b) => a - b).join());
    if (new Set(indexSets).size > 1) {
      warnings.push(`${BENCHMARK_TITLES[bench]}: the runs cover different problems (${present.map((role) => `${role} n=${loaded[role]!.rows.length}`).join(', ')}); accuracies are not over the same set`);
    }
    const { base, lora, full } = { base: cells.base[bench], lora: cells.lora[bench], full: cells.full[bench] };
    recovery[bench] = base && lora && full ? recoveryPercent(base, lora, full) : null;
  }
  return { benches: BENCHMARKS.filter((b) => seen.has(b)), cells, recovery, warnings };
}

/** Table 1 as aligned text: accuracy in %, recovery in %, n/a where undefined. */
export function formatCompareTable(table: CompareTable): string {
  const header = ['', ...table.benches.map((b) => BENCHMARK_TITLES[b])];
  const percent = (value: number | null | undefined) => (value === null || value === undefined ? 'n/a' : value.toFixed(1));
  const body = [
    ...ROLES.map((role) => [ROLE_TITLES[role], ...table.benches.map((b) => percent(table.cells[role][b] && 100 * table.cells[role][b]!.accuracy))]),
    ['% recovery', ...table.benches.map((b) => percent(table.recovery[b]))],
  ];
  const lines = [header, ...body];
  const widths = header.map((_, c) => Math.max(...lines.map((line) => line[c]!.length)));
  return `${lines.map((line) => line.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd()).join('\n')}\n`;
}
