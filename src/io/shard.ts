// The shard rule of `rank1 extract | eval | ablate --shard I/N`: shard I of N takes the contiguous rows
// [⌊I·R/N⌋, ⌊(I+1)·R/N⌋) of R. By row index only, so shards are disjoint, cover the rows, and differ in size by
// at most one; contiguous (not `row % N == I`), so concatenating the shards in shard order is the unsharded
// order, and a merge is a concatenation (`rank1 store merge`, `eval --merge`, `ablate --merge`).
//
// Without --shard, a job run by a scheduler takes its shard from the environment:
//   Slurm job arrays:         I = (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP,
//                             N = SLURM_ARRAY_TASK_COUNT (or --shards N); task ids need not start at 0.
//   Kubernetes Indexed Jobs:  I = JOB_COMPLETION_INDEX, N = --shards N (the pod is not told `completions`).

export interface Shard {
  /** 0-based, < count. */
  index: number;
  count: number;
}

/** Where a shard came from, for the job's notes. */
export interface ShardChoice {
  shard: Shard;
  source: '--shard' | 'slurm' | 'kubernetes' | 'none';
}

export class ShardError extends Error {
  override name = 'ShardError';
}

/** The unsharded job: one shard of one. */
export const WHOLE: Shard = { index: 0, count: 1 };

/** `I/N` with 0 ≤ I < N. */
export function parseShard(text: string): Shard {
  const match = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!match) throw new ShardError(`--shard must be I/N (shard I of N, counted from 0), got "${text}"`);
  return checkShard({ index: Number(match[1]), count: Number(match[2]) }, `--shard ${text}`);
}

function checkShard(shard: Shard, what: string): Shard {
  if (!Number.isSafeInteger(shard.count) || shard.count < 1) throw new ShardError(`${what}: the shard count must be at least 1`);
  if (!Number.isSafeInteger(shard.index) || shard.index < 0 || shard.index >= shard.count) {
    throw new ShardError(`${what}: shard ${shard.index} is not one of 0..${shard.count - 1}`);
  }
  return shard;
}

function envInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const value = env[name];
  if (value === undefined || value.trim() === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new ShardError(`${name}=${JSON.stringify(value)} is not a non-negative integer`);
  return n;
}

/**
 * The shard of this process: --shard when given, else the scheduler's (Slurm array, Kubernetes Indexed Job),
 * else the whole job. `shards` is --shards N (needed with Kubernetes; with Slurm it must match the array).
 */
export function resolveShard(options: { shard?: string; shards?: number }, env: NodeJS.ProcessEnv = process.env): ShardChoice {
  if (options.shard !== undefined) {
    const shard = parseShard(options.shard);
    if (options.shards !== undefined && options.shards !== shard.count) throw new ShardError(`--shard ${options.shard} and --shards ${options.shards} disagree on the shard count`);
    return { shard, source: '--shard' };
  }
  const taskId = envInt(env, 'SLURM_ARRAY_TASK_ID');
  if (taskId !== undefined) {
    const min = envInt(env, 'SLURM_ARRAY_TASK_MIN') ?? 0;
    const step = envInt(env, 'SLURM_ARRAY_TASK_STEP') ?? 1;
    const count = options.shards ?? envInt(env, 'SLURM_ARRAY_TASK_COUNT');
    if (count === undefined) throw new ShardError('SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --shards N or --shard I/N');
    if (step < 1 || (taskId - min) % step !== 0) throw new ShardError(`SLURM_ARRAY_TASK_ID=${taskId} is not on the array's grid (min ${min}, step ${step}): pass --shard I/N`);
    return {
      shard: checkShard({ index: (taskId - min) / step, count }, `SLURM_ARRAY_TASK_ID=${taskId} (SLURM_ARRAY_TASK_MIN=${min}, ${count} task(s); use a plain range such as --array=0-${count - 1}, or --shard I/N)`),
      source: 'slurm',
    };
  }
  const completionIndex = envInt(env, 'JOB_COMPLETION_INDEX');
  if (completionIndex !== undefined && options.shards !== undefined) {
    return { shard: checkShard({ index: completionIndex, count: options.shards }, `JOB_COMPLETION_INDEX=${completionIndex} with --shards ${options.shards}`), source: 'kubernetes' };
  }
  if (options.shards !== undefined && options.shards !== 1) {
    throw new ShardError(`--shards ${options.shards} needs the shard index: --shard I/N, or run as a Slurm array task or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)`);
  }
  return { shard: WHOLE, source: 'none' };
}

/** Rows [from, to) of `rows` that `shard` takes. */
export function shardRange(rows: number, shard: Shard): { from: number; to: number } {
  // Exact in floating point for any row count a file can hold (rows · count < 2^53).
  return { from: Math.floor((shard.index * rows) / shard.count), to: Math.floor(((shard.index + 1) * rows) / shard.count) };
}

/** The items of `items` that `shard` takes, in order. */
export function shardSlice<T>(items: readonly T[], shard: Shard): T[] {
  const { from, to } = shardRange(items.length, shard);
  return items.slice(from, to);
}

export function isWhole(shard: Shard): boolean {
  return shard.count === 1;
}

/** `shard 2/3` */
export function describeShard(shard: Shard): string {
  return `shard ${shard.index}/${shard.count}`;
}

/** What every sharded output records, so a merge can check that its parts tile the rows. */
export interface ShardRecord {
  index: number;
  count: number;
  /** The rows [from, to) of `rows` this shard took. */
  from: number;
  to: number;
  rows: number;
}

export function shardRecord(rows: number, shard: Shard): ShardRecord {
  return { index: shard.index, count: shard.count, ...shardRange(rows, shard), rows };
}

/**
 * Checks that parts (each with its record and a name for messages) are the shards 0..N−1 of one count over the
 * same rows, each once, and returns them in shard order. A missing shard is a gap; a repeated one an overlap.
 */
export function orderShards<T>(parts: readonly { name: string; record: ShardRecord | undefined; value: T }[]): T[] {
  if (parts.length === 0) throw new ShardError('nothing to merge');
  const missing = parts.find((p) => p.record === undefined);
  if (missing) throw new ShardError(`${missing.name} was not made with --shard (it records no shard): merge only the outputs of sharded runs`);
  const first = parts[0]!.record!;
  const byIndex = new Map<number, { name: string; record: ShardRecord; value: T }>();
  for (const part of parts) {
    const record = part.record!;
    if (record.count !== first.count) throw new ShardError(`${part.name} is shard ${record.index} of ${record.count}, but ${parts[0]!.name} is of ${first.count}`);
    if (record.rows !== first.rows) throw new ShardError(`${part.name} shards ${record.rows} rows, but ${parts[0]!.name} shards ${first.rows}: not the same data`);
    const expected = shardRange(record.rows, record);
    if (record.from !== expected.from || record.to !== expected.to) throw new ShardError(`${part.name}: shard ${record.index}/${record.count} should hold rows ${expected.from}..${expected.to - 1}, it records ${record.from}..${record.to - 1}`);
    const other = byIndex.get(record.index);
    if (other) throw new ShardError(`overlap: ${part.name} and ${other.name} are both shard ${record.index}/${record.count}`);
    byIndex.set(record.index, { name: part.name, record, value: part.value });
  }
  const gaps = Array.from({ length: first.count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (gaps.length > 0) {
    const shown = gaps.slice(0, 5).map((i) => `shard ${i}/${first.count} (rows ${shardRange(first.rows, { index: i, count: first.count }).from}..${shardRange(first.rows, { index: i, count: first.count }).to - 1})`);
    throw new ShardError(`gap: ${shown.join(', ')}${gaps.length > 5 ? ` and ${gaps.length - 5} more` : ''} missing`);
  }
  return Array.from({ length: first.count }, (_, i) => byIndex.get(i)!.value);
}
