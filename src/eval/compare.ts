// The paper's Table 1 from results files: rows Base / Rank-1 LoRA / Full finetune, a column per benchmark
// (accuracy %), and a last row `% recovery = (lora − base) / (full − base)`.
//
// And the paper's Table 2 (appendix C) when ablated runs are given: the rank-1 adapter evaluated with every MLP
// adapter, or every attention adapter, zero-ablated (`rank1 eval --ablate mlp|attention`), each accuracy x shown
// as the share of the rank-1 gain it keeps, `(x − base) / (lora − base)`.
//
// A comparison spec names the runs of one benchmark:
// `[BENCH:]base=FILE,lora=FILE,full=FILE[,mlp_ablated=FILE,attn_ablated=FILE]`. The benchmark is read from the
// rows themselves (each row records it) unless the prefix names it; pass one spec per benchmark. A role may be
// left out (its cells and the recovery show as n/a).
import { BENCHMARKS, BENCHMARK_TITLES, isBenchmarkName, type BenchmarkName } from './benchmarks.ts';
import { readResults, summarize, type ResultRow, type ResultsSummary } from './results.ts';

/** Table 1's rows. */
export const ROLES = ['base', 'lora', 'full'] as const;
export type Role = (typeof ROLES)[number];
export const ROLE_TITLES: Record<Role, string> = { base: 'Base', lora: 'Rank-1 LoRA', full: 'Full finetune' };

/** Table 2's rows: the rank-1 adapter with one kind of adapter removed, and the `--ablate` its rows must record. */
export const ABLATED_ROLES = ['mlp_ablated', 'attn_ablated'] as const;
export type AblatedRole = (typeof ABLATED_ROLES)[number];
export const ABLATED_ROLE_TITLES: Record<AblatedRole, string> = { mlp_ablated: 'MLP adapters removed', attn_ablated: 'Attention adapters removed' };
export const ABLATED_ROLE_SELECTION: Record<AblatedRole, string> = { mlp_ablated: 'mlp', attn_ablated: 'attention' };

export type CompareRole = Role | AblatedRole;
const ALL_ROLES: readonly CompareRole[] = [...ROLES, ...ABLATED_ROLES];

export interface CompareSpec {
  bench?: BenchmarkName;
  files: Partial<Record<CompareRole, string>>;
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
  const files: Partial<Record<CompareRole, string>> = {};
  for (const part of rest.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const eq = part.indexOf('=');
    const role = part.slice(0, eq).trim();
    const file = part.slice(eq + 1).trim();
    if (eq <= 0 || file === '') throw new Error(`--compare "${spec}": expected ROLE=FILE items, got "${part}"`);
    if (!(ALL_ROLES as readonly string[]).includes(role)) throw new Error(`--compare "${spec}": unknown role "${role}" (one of ${ALL_ROLES.join(', ')})`);
    if (files[role as CompareRole] !== undefined) throw new Error(`--compare "${spec}": ${role} is given twice`);
    files[role as CompareRole] = file;
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
  /** Per role and benchmark; the ablated roles only when given. */
  cells: Record<Role, Partial<Record<BenchmarkName, CompareCell>>> & Partial<Record<AblatedRole, Partial<Record<BenchmarkName, CompareCell>>>>;
  /** Percent; null where a run is missing or full == base. */
  recovery: Partial<Record<BenchmarkName, number | null>>;
  /** The paper's Table 2, present when some spec names an ablated run. */
  table2?: Table2;
  warnings: string[];
}

export interface Table2 {
  /** `(x − base) / (lora − base)` in percent per ablated run; null where a run is missing or lora == base. */
  recovery: Record<AblatedRole, Partial<Record<BenchmarkName, number | null>>>;
  /** Why a cell is null, in words (e.g. the rank-1 accuracy equals the base's, so there is no gain to share). */
  notes: string[];
}

/** `(lora − base) / (full − base)` in percent, or null when undefined (full == base). */
export function recoveryPercent(base: ResultsSummary, lora: ResultsSummary, full: ResultsSummary): number | null {
  // Exact rational comparison: accuracies are correct / n.
  if (full.correct * base.n === base.correct * full.n) return null;
  return (100 * (lora.accuracy - base.accuracy)) / (full.accuracy - base.accuracy);
}

/** `(x − base) / (lora − base)` in percent: the share of the rank-1 gain an ablated run keeps; null when lora == base. */
export function gainKeptPercent(base: ResultsSummary, lora: ResultsSummary, ablated: ResultsSummary): number | null {
  return recoveryPercent(base, ablated, lora);
}

/** The rows of a Table 1 run record no ablation; those of an ablated run record exactly its group. */
function checkAblation(role: CompareRole, rows: readonly ResultRow[], file: string): void {
  const expected = (ABLATED_ROLES as readonly string[]).includes(role) ? ABLATED_ROLE_SELECTION[role as AblatedRole] : undefined;
  const wrong = rows.find((row) => row.ablated !== expected);
  if (!wrong) return;
  const has = wrong.ablated === undefined ? 'no ablation (a run without --ablate)' : `--ablate ${wrong.ablated}`;
  const wants = expected === undefined ? 'a run without --ablate' : `rows evaluated with --ablate ${expected}`;
  throw new Error(`${file}: given as ${role}, which needs ${wants}, but its rows record ${has} (problem ${wrong.index})`);
}

function benchOfRows(rows: readonly ResultRow[], file: string): BenchmarkName | undefined {
  const benches = [...new Set(rows.map((r) => r.bench))];
  if (benches.length > 1) throw new Error(`${file}: mixes results of ${benches.join(' and ')}`);
  return benches[0];
}

export async function buildCompareTable(specs: readonly CompareSpec[]): Promise<CompareTable> {
  const cells: Record<CompareRole, Partial<Record<BenchmarkName, CompareCell>>> = { base: {}, lora: {}, full: {}, mlp_ablated: {}, attn_ablated: {} };
  const recovery: CompareTable['recovery'] = {};
  const table2: Table2 = { recovery: { mlp_ablated: {}, attn_ablated: {} }, notes: [] };
  const warnings: string[] = [];
  const seen = new Set<BenchmarkName>();
  for (const spec of specs) {
    const loaded: Partial<Record<CompareRole, { file: string; rows: ResultRow[] }>> = {};
    let bench = spec.bench;
    for (const role of ALL_ROLES) {
      const file = spec.files[role];
      if (file === undefined) continue;
      const { rows, truncatedTail } = await readResults(file);
      if (rows.length === 0) throw new Error(`${file}: no results (missing or empty file)`);
      if (truncatedTail) warnings.push(`${file}: last line is cut off (run interrupted while writing); ignored`);
      const fileBench = benchOfRows(rows, file);
      if (bench !== undefined && fileBench !== bench) throw new Error(`${file}: holds ${fileBench} results, but the comparison is for ${bench}`);
      bench = fileBench;
      checkAblation(role, rows, file);
      loaded[role] = { file, rows };
    }
    if (bench === undefined) throw new Error('--compare: no results files');
    if (seen.has(bench)) throw new Error(`--compare: ${bench} is given twice`);
    seen.add(bench);
    for (const role of ALL_ROLES) {
      const entry = loaded[role];
      if (entry) cells[role][bench] = { ...summarize(entry.rows), file: entry.file };
    }
    const present = ALL_ROLES.filter((role) => loaded[role]);
    const indexSets = present.map((role) => loaded[role]!.rows.map((r) => r.index).sort((a, b) => a - b).join());
    if (new Set(indexSets).size > 1) {
      warnings.push(`${BENCHMARK_TITLES[bench]}: the runs cover different problems (${present.map((role) => `${role} n=${loaded[role]!.rows.length}`).join(', ')}); accuracies are not over the same set`);
    }
    const { base, lora, full } = { base: cells.base[bench], lora: cells.lora[bench], full: cells.full[bench] };
    recovery[bench] = base && lora && full ? recoveryPercent(base, lora, full) : null;
    fillTable2(table2, bench, cells);
  }
  const { mlp_ablated: mlp, attn_ablated: attention, ...table1Cells } = cells;
  const ablatedCells = { ...(Object.keys(mlp).length > 0 ? { mlp_ablated: mlp } : {}), ...(Object.keys(attention).length > 0 ? { attn_ablated: attention } : {}) };
  const anyAblated = Object.keys(ablatedCells).length > 0;
  return { benches: BENCHMARKS.filter((b) => seen.has(b)), cells: { ...table1Cells, ...ablatedCells }, recovery, ...(anyAblated ? { table2 } : {}), warnings };
}

/** Table 2's cells of one benchmark, with a note where one is undefined. */
function fillTable2(table2: Table2, bench: BenchmarkName, cells: Record<CompareRole, Partial<Record<BenchmarkName, CompareCell>>>): void {
  const given = ABLATED_ROLES.filter((role) => cells[role][bench]);
  if (given.length === 0) return;
  const { base, lora } = { base: cells.base[bench], lora: cells.lora[bench] };
  for (const role of given) table2.recovery[role][bench] = base && lora ? gainKeptPercent(base, lora, cells[role][bench]!) : null;
  const title = BENCHMARK_TITLES[bench];
  if (!base || !lora) table2.notes.push(`${title}: Table 2 needs the base and lora runs (x is measured against the rank-1 gain ℓ − b)`);
  else if (lora.correct * base.n === base.correct * lora.n) {
    table2.notes.push(`${title}: undefined — the rank-1 accuracy equals the base's (ℓ = b = ${(100 * base.accuracy).toFixed(1)}%), so there is no gain to keep`);
  }
}

const percent = (value: number | null | undefined) => (value === null || value === undefined ? 'n/a' : value.toFixed(1));

function alignTable(lines: readonly string[][]): string {
  const widths = lines[0]!.map((_, c) => Math.max(...lines.map((line) => line[c]!.length)));
  return `${lines.map((line) => line.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd()).join('\n')}\n`;
}

/** Table 1 as aligned text: accuracy in %, recovery in %, n/a where undefined; then Table 2 when it was asked for. */
export function formatCompareTable(table: CompareTable): string {
  const header = ['', ...table.benches.map((b) => BENCHMARK_TITLES[b])];
  const accuracy = (role: CompareRole, b: BenchmarkName) => percent(table.cells[role]?.[b] && 100 * table.cells[role]![b]!.accuracy);
  const table1 = alignTable([
    header,
    ...ROLES.map((role) => [ROLE_TITLES[role], ...table.benches.map((b) => accuracy(role, b))]),
    ['% recovery', ...table.benches.map((b) => percent(table.recovery[b]))],
  ]);
  return table.table2 ? `${table1}\n${formatTable2(table, table.table2)}` : table1;
}

/** Table 2 as aligned text: per ablated run its accuracy and the share of the rank-1 gain it keeps. */
function formatTable2(table: CompareTable, table2: Table2): string {
  const header = ['Table 2: adapters removed from the rank-1 LoRA', ...table.benches.map((b) => BENCHMARK_TITLES[b])];
  const given = ABLATED_ROLES.filter((role) => table.cells[role] !== undefined);
  const accuracy = (role: AblatedRole, b: BenchmarkName) => percent(table.cells[role]![b] && 100 * table.cells[role]![b]!.accuracy);
  const rows = given.flatMap((role) => [
    [`${ABLATED_ROLE_TITLES[role]}: accuracy`, ...table.benches.map((b) => accuracy(role, b))],
    [`${ABLATED_ROLE_TITLES[role]}: % of gain kept`, ...table.benches.map((b) => percent(table2.recovery[role][b]))],
  ]);
  const notes = ['% of gain kept = (x − b) / (ℓ − b): x the ablated accuracy, b the base\'s, ℓ the rank-1 LoRA\'s', ...table2.notes];
  return `${alignTable([header, ...rows])}${notes.map((note) => `  ${note}\n`).join('')}`;
}
