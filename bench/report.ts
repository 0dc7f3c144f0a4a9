// The printed table and the rank1-versus-peer ratios, with the project brief's targets beside them.
import type { CaseResult } from './harness.ts';

export interface Target {
  /** Matmul size the target is stated at. */
  size: number;
  /** rank1 must be at least this many times as fast as the peer. */
  atLeast: number;
  /** The target as the project brief words it. */
  text: string;
}

export interface RatioPair {
  rank1: string;
  peer: string;
  target?: Target;
}

/** The brief's performance targets, and the other pairings worth a glance. */
export const ratioPairs: RatioPair[] = [
  { rank1: 'rank1 cpu', peer: 'tfjs-wasm', target: { size: 1024, atLeast: 2, text: 'CPU f32 matmul 1024² ≥ 2× tfjs-backend-wasm' } },
  { rank1: 'rank1 cpu', peer: 'pytorch', target: { size: 1024, atLeast: 0.5, text: 'CPU f32 matmul 1024² ≥ 0.5× PyTorch (issue 21)' } },
  { rank1: 'rank1 cpu mul+add', peer: 'tfjs-wasm' },
  { rank1: 'rank1 cpu mul+add', peer: 'pytorch' },
  { rank1: 'rank1 cpu', peer: 'rank1 cpu mul+add' },
  { rank1: 'rank1 cpu', peer: 'gpu.js webasm threads' },
  { rank1: 'rank1 webgpu', peer: 'tfjs-webgpu', target: { size: 1024, atLeast: 2, text: 'WebGPU matmul 1024² ≥ 2× tfjs-backend-webgpu on the same adapter' } },
  { rank1: 'rank1 webgpu', peer: 'gpu.js webgpu' },
];

export interface TargetVerdict {
  size: number;
  atLeast: number;
  text: string;
  /** null when either side did not run. */
  ratio: number | null;
  status: 'PASS' | 'SHORT' | 'n/a';
  /** PASS: how far above the target (ratio / atLeast); SHORT: how much faster rank1 must get (atLeast / ratio). */
  factor: number | null;
  /** Why n/a: which side was skipped. */
  note?: string;
}

export interface RatioRow {
  pair: string;
  rank1: string;
  peer: string;
  /** size → peer mean ms / rank1 mean ms (rank1's speedup); null where either did not run. */
  bySize: Record<string, number | null>;
  target?: TargetVerdict;
}

const f32Matmul = (r: CaseResult) => r.group === 'matmul' && r.case.startsWith('matmul f32 ');

function find(results: CaseResult[], impl: string, size: number): CaseResult | undefined {
  return results.find((r) => f32Matmul(r) && r.impl === impl && r.size === size);
}

/** Ratios for the pairs whose both sides were planned in this run (ran or skipped), per matmul size. */
export function computeRatios(results: CaseResult[], sizes: number[]): RatioRow[] {
  const planned = (impl: string) => results.some((r) => f32Matmul(r) && r.impl === impl);
  return ratioPairs.filter((pair) => planned(pair.rank1) && planned(pair.peer)).map((pair) => {
    const bySize: Record<string, number | null> = {};
    for (const size of sizes) {
      const mine = find(results, pair.rank1, size);
      const theirs = find(results, pair.peer, size);
      bySize[size] = mine?.meanMs && theirs?.meanMs ? theirs.meanMs / mine.meanMs : null;
    }
    const row: RatioRow = { pair: `${pair.rank1} / ${pair.peer}`, rank1: pair.rank1, peer: pair.peer, bySize };
    if (pair.target) {
      const { size, atLeast, text } = pair.target;
      const ratio = bySize[size] ?? null;
      if (ratio === null) {
        const missing = [find(results, pair.rank1, size), find(results, pair.peer, size)]
          .map((r, i) => (r ? (r.skipped ? `${r.impl} skipped: ${r.skipped}` : null) : `${i === 0 ? pair.rank1 : pair.peer} not run at ${size}²`))
          .filter(Boolean)
          .join('; ');
        row.target = { size, atLeast, text, ratio, status: 'n/a', factor: null, note: missing };
      } else {
        const pass = ratio >= atLeast;
        row.target = { size, atLeast, text, ratio, status: pass ? 'PASS' : 'SHORT', factor: pass ? ratio / atLeast : atLeast / ratio };
      }
    }
    return row;
  });
}

function formatNumber(value: number | undefined, digits = 3): string {
  if (value === undefined || !Number.isFinite(value)) return '';
  if (value === 0) return '0';
  const magnitude = Math.floor(Math.log10(Math.abs(value)));
  return value.toFixed(Math.max(0, Math.min(6, digits - 1 - magnitude)));
}

function formatRatio(ratio: number | null): string {
  return ratio === null ? '—' : `${formatNumber(ratio)}×`;
}

export function formatVerdict(v: TargetVerdict): string {
  if (v.status === 'n/a') return `n/a (${v.note})`;
  if (v.status === 'PASS') return `PASS at ${formatRatio(v.ratio)} (${formatNumber(v.factor!)}× the ≥${v.atLeast}× target)`;
  return `SHORT at ${formatRatio(v.ratio)}: rank1 must get ${formatNumber(v.factor!)}× faster to reach ≥${v.atLeast}×`;
}

function table(rows: string[][], header: string[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 && i <= 7 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** One line for progress output while the run goes on. */
export function formatProgress(r: CaseResult): string {
  const label = `${r.case.padEnd(34)} ${r.impl.padEnd(22)}`;
  if (r.skipped) return `  ${label} skipped: ${r.skipped}`;
  const rate = r.gflops !== undefined ? `${formatNumber(r.gflops)} GFLOP/s` : r.gbps !== undefined ? `${formatNumber(r.gbps)} GB/s` : '';
  const check = r.check && !r.check.ok ? `  CHECK FAILED (got ${r.check.value}, expected ${r.check.expected})` : '';
  return `  ${label} ${formatNumber(r.meanMs).padStart(9)} ms  ${rate.padStart(16)}  (${r.samples} sample${r.samples === 1 ? '' : 's'})${check}`;
}

/** The table, with each distinct skip reason given once below it as a numbered note. */
export function formatResultsTable(results: CaseResult[]): string {
  const header = ['case', 'backend / peer', 'mean ms', '±%', 'samples', 'first ms', 'GFLOP/s', 'GB/s', 'check'];
  const reasons: string[] = [];
  const rows = results.map((r) => {
    if (r.skipped) {
      if (!reasons.includes(r.skipped)) reasons.push(r.skipped);
      return [r.case, r.impl, '', '', '', '', '', '', `skipped [${reasons.indexOf(r.skipped) + 1}]`];
    }
    return [
      r.case, r.impl, formatNumber(r.meanMs), formatNumber(r.rmePercent, 2), String(r.samples ?? ''),
      formatNumber(r.firstCallMs), formatNumber(r.gflops), formatNumber(r.gbps),
      r.check ? (r.check.ok ? 'ok' : `WRONG: ${formatNumber(r.check.value)} vs ${formatNumber(r.check.expected)}`) : '',
    ];
  });
  const notes = reasons.map((reason, i) => `  [${i + 1}] ${reason}`);
  return [table(rows, header), ...(notes.length ? ['', 'skipped:', ...notes] : [])].join('\n');
}

export function formatRatioTable(ratios: RatioRow[], sizes: number[]): string {
  const lines = [
    'rank1 speedup over each peer on f32 matmul = peer mean ms ÷ rank1 mean ms (above 1: rank1 is faster)',
  ];
  const pairWidth = Math.max(...ratios.map((r) => r.pair.length));
  lines.push(`  ${'pair'.padEnd(pairWidth)}  ${sizes.map((s) => `${s}²`.padStart(10)).join('')}   target (project brief)`);
  for (const row of ratios) {
    const cells = sizes.map((s) => formatRatio(row.bySize[s] ?? null).padStart(10)).join('');
    const verdict = row.target ? `${row.target.size}² ≥ ${row.target.atLeast}×: ${formatVerdict(row.target)}` : '—';
    lines.push(`  ${row.pair.padEnd(pairWidth)}  ${cells}   ${verdict}`);
  }
  return lines.join('\n');
}
