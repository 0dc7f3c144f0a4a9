// Sharded evaluation (`rank1 eval --shard I/N`, io/shard.ts) and `rank1 eval --merge`. A shard's results file
// holds the same rows as the unsharded file for its problems, nothing more (so the rows merge unchanged);
// beside it, FILE.shard.json records which problems the shard took, so that a merge can tell a missing shard
// (a gap) or a repeated one (an overlap) and an unfinished shard from a finished one.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { orderShards, ShardError, type ShardRecord } from '../io/shard.ts';
import type { BenchmarkName } from './benchmarks.ts';
import { readResults, ResultsFileError, summarize, type ResultRow, type ResultsSummary } from './results.ts';

/** FILE.shard.json */
export interface EvalShardFile {
  bench: BenchmarkName;
  data: string;
  /** The problems (after --limit) sharded, and this shard's [from, to) of them. */
  shard: ShardRecord;
}

export const shardFileOf = (resultsFile: string): string => `${resultsFile}.shard.json`;

export async function writeEvalShardFile(resultsFile: string, info: EvalShardFile): Promise<void> {
  await mkdir(dirname(resultsFile), { recursive: true });
  await writeFile(shardFileOf(resultsFile), `${JSON.stringify(info, null, 2)}\n`, 'utf8');
}

async function readEvalShardFile(resultsFile: string): Promise<EvalShardFile | undefined> {
  let text: string;
  try {
    text = await readFile(shardFileOf(resultsFile), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return JSON.parse(text) as EvalShardFile;
}

/**
 * Joins the results files of the shards of one evaluation (any order) into `out`: the rows in problem order,
 * as the unsharded run writes them. Refuses files of another benchmark or data file, another ablation, a gap,
 * an overlap, and a shard whose rows do not cover its problems (unfinished: resume it first).
 */
export async function mergeResults(out: string, files: readonly string[]): Promise<{ rows: ResultRow[]; summary: ResultsSummary }> {
  const parts = await Promise.all(files.map(async (file) => ({ file, info: await readEvalShardFile(file), results: await readResults(file) })));
  const first = parts[0];
  if (!first) throw new ShardError('eval --merge needs at least one results file');
  for (const part of parts) {
    if (part.info && first.info) {
      if (part.info.bench !== first.info.bench) throw new ResultsFileError(part.file, undefined, `holds ${part.info.bench} results, but ${first.file} holds ${first.info.bench}`);
      if (resolve(part.info.data) !== resolve(first.info.data)) throw new ResultsFileError(part.file, undefined, `was run on --data ${part.info.data}, but ${first.file} on ${first.info.data}`);
    }
  }
  let ordered: typeof parts;
  try {
    ordered = orderShards(parts.map((p) => ({ name: p.file, record: p.info?.shard, value: p })));
  } catch (error) {
    if (error instanceof ShardError) throw new ShardError(`eval --merge: ${error.message} (each shard's FILE.shard.json says which problems it took)`);
    throw error;
  }
  const ablated = first.results.rows[0]?.ablated;
  const rows: ResultRow[] = [];
  for (const { file, info, results } of ordered) {
    const { from, to, index, count } = info!.shard;
    const byIndex = new Map<number, ResultRow>();
    for (const row of results.rows) {
      if (row.index < from || row.index >= to) throw new ResultsFileError(file, undefined, `holds problem ${row.index}, outside its shard ${index}/${count} (problems ${from}..${to - 1})`);
      if (row.ablated !== ablated) throw new ResultsFileError(file, undefined, `holds results ${row.ablated === undefined ? 'without ablation' : `with --ablate ${row.ablated}`}, unlike ${first.file}`);
      byIndex.set(row.index, row);
    }
    const missing = Array.from({ length: to - from }, (_, k) => from + k).filter((k) => !byIndex.has(k));
    if (missing.length > 0) throw new ResultsFileError(file, undefined, `shard ${index}/${count} is unfinished: no result for problem(s) ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}; resume it (rerun with the same --out) and merge again`);
    for (let k = from; k < to; k++) rows.push(byIndex.get(k)!);
  }
  const text = rows.map((row) => `${JSON.stringify(row)}\n`).join('');
  await writeFileAtomic(out, async (handle) => {
    await handle.writeFile(text, 'utf8');
  });
  return { rows, summary: summarize(rows) };
}
