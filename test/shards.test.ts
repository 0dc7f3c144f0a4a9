// Sharding (`--shard I/N` on rank1 extract | eval | ablate, src/io/shard.ts) and merging (`rank1 store merge`,
// `eval --merge`, `ablate --merge`): the rule itself (disjoint, covering, contiguous; the Slurm and Kubernetes
// defaults), and on the toy model three shards run as three concurrent processes merge into exactly the
// unsharded outputs — the store's acts byte for byte, the results row for row.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseShard, resolveShard, shardRange, shardSlice, orderShards, shardRecord } from '../src/io/shard.ts';
import { readStoreIndex } from '../src/interp/activation-store.ts';
import { loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { storeBytes } from './helpers/store-bytes.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');

/** The environment without any scheduler's shard variables, plus `extra`. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith('SLURM_') || name === 'JOB_COMPLETION_INDEX') delete env[name];
  return { ...env, ...extra };
}

const rank1 = (args: string[], env: NodeJS.ProcessEnv = cleanEnv()) =>
  run(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, env, maxBuffer: 64 << 20 });

describe('the shard rule', () => {
  it('shards are contiguous, disjoint, cover the rows in order and differ in size by at most one', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 500 }), fc.integer({ min: 1, max: 40 }), (rows, count) => {
      const items = Array.from({ length: rows }, (_, i) => i);
      const parts = Array.from({ length: count }, (_, index) => shardSlice(items, { index, count }));
      expect(parts.flat()).toEqual(items);
      const sizes = parts.map((p) => p.length);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      for (let index = 0; index < count; index++) {
        const { from, to } = shardRange(rows, { index, count });
        expect(parts[index]).toEqual(items.slice(from, to));
      }
    }));
  });

  it('parses I/N and refuses what is not a shard', () => {
    expect(parseShard('2/3')).toEqual({ index: 2, count: 3 });
    expect(() => parseShard('3/3')).toThrow(/shard 3 is not one of 0\.\.2/);
    expect(() => parseShard('1/0')).toThrow(/at least 1/);
    expect(() => parseShard('a/b')).toThrow(/--shard must be I\/N/);
  });

  it('defaults from a Slurm array task (task ids need not start at 0, steps counted) or a Kubernetes completion index with --shards', () => {
    expect(resolveShard({}, {})).toEqual({ shard: { index: 0, count: 1 }, source: 'none' });
    expect(resolveShard({}, { SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_MIN: '0' }).shard).toEqual({ index: 0, count: 3 });
    expect(resolveShard({}, { SLURM_ARRAY_TASK_ID: '7', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_MIN: '5' })).toEqual({ shard: { index: 2, count: 3 }, source: 'slurm' });
    expect(resolveShard({}, { SLURM_ARRAY_TASK_ID: '14', SLURM_ARRAY_TASK_COUNT: '4', SLURM_ARRAY_TASK_MIN: '2', SLURM_ARRAY_TASK_STEP: '4' }).shard).toEqual({ index: 3, count: 4 });
    expect(() => resolveShard({}, { SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_STEP: '1' })).toThrow(/shard 4 is not one of 0\.\.2/);
    expect(resolveShard({ shards: 4 }, { JOB_COMPLETION_INDEX: '3' })).toEqual({ shard: { index: 3, count: 4 }, source: 'kubernetes' });
    // Without --shards a completion index says nothing about the count: the whole job.
    expect(resolveShard({}, { JOB_COMPLETION_INDEX: '3' }).source).toBe('none');
    expect(() => resolveShard({ shards: 4 }, {})).toThrow(/needs the shard index/);
    // --shard wins over the environment.
    expect(resolveShard({ shard: '1/2' }, { SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_COUNT: '3' })).toEqual({ shard: { index: 1, count: 2 }, source: '--shard' });
  });

  it('a merge names the missing shard (gap), the repeated one (overlap) and a different shard count', () => {
    const part = (name: string, index: number, count = 3) => ({ name, record: shardRecord(10, { index, count }), value: name });
    expect(orderShards([part('c', 2), part('a', 0), part('b', 1)])).toEqual(['a', 'b', 'c']);
    expect(() => orderShards([part('a', 0), part('c', 2)])).toThrow(/gap: shard 1\/3 \(rows 3\.\.5\) missing/);
    expect(() => orderShards([part('a', 0), part('a2', 0), part('b', 1), part('c', 2)])).toThrow(/overlap: a2 and a are both shard 0\/3/);
    expect(() => orderShards([part('a', 0), part('b', 1, 4)])).toThrow(/b is shard 1 of 4, but a is of 3/);
    expect(() => orderShards([{ name: 'x', record: undefined, value: 'x' }])).toThrow(/x was not made with --shard/);
  });
});

describe('three shards as three concurrent processes merge into the unsharded outputs (toy model)', () => {
  let dir: string;
  let adapter: string;
  let traces: string;
  let problems: string;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-shards-'));
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    adapter = path.join(dir, 'adapter');
    await savePeftAdapter(adapter, randomRankOneAdapters(model.dims, 1, getCpuBackend()));
    model.dispose();
    traces = path.join(dir, 'traces.jsonl');
    await fs.writeFile(traces, Array.from({ length: 7 }, (_, i) => JSON.stringify({
      question: `What is the last digit of ${i + 12} + ${i + 7}?`,
      deepseek_thinking_trajectory: `Okay, ${i + 12} + ${i + 7} = ${2 * i + 19}.${' Let me check again.'.repeat(i % 3)} So the last digit is ${(2 * i + 19) % 10}.`,
      deepseek_attempt: `The last digit is \\boxed{${(2 * i + 19) % 10}}.`,
    })).join('\n'));
    problems = path.join(dir, 'toy-problems.jsonl');
    await fs.writeFile(problems, Array.from({ length: 7 }, (_, i) => JSON.stringify({ problem: `Start at ${i + 1}. Add 3, then multiply by 7. What is the last digit?`, answer: ((i + 4) * 7) % 10 })).join('\n'));
  }, 60_000);

  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('extract (Slurm array variables, task ids from 5), eval (--shard) and ablate (JOB_COMPLETION_INDEX + --shards)', async () => {
    const common = ['--model', toy, '--adapter', adapter, '--backend', 'cpu'];
    const extractArgs = (out: string) => ['extract', ...common, '--data', traces, '--out', out, '--shard-tokens', '60', '--mlp-neurons', '2', '--no-progress'];
    const ablateArgs = (out: string) => ['ablate', ...common, '--data', traces, '--out', out, '--examples', '5', '--min-tokens', '10', '--no-progress'];
    // 7 problems in shards 0-1, 2-3, 4-6 and batches of 2: every batch holds the same problems sharded or not
    // (what this test checks is the sharding; batched = single decoding is eval-run's to check).
    const evalArgs = (out: string) => ['eval', ...common, '--bench', 'toy', '--data', problems, '--out', out, '--max-tokens', '12', '--batch', '2'];
    const at = (name: string) => path.join(dir, name);
    const shards = [0, 1, 2];
    const slurm = (i: number) => cleanEnv({ SLURM_ARRAY_JOB_ID: '77', SLURM_ARRAY_TASK_ID: String(5 + i), SLURM_ARRAY_TASK_MIN: '5', SLURM_ARRAY_TASK_MAX: '7', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_STEP: '1' });
    // The unsharded runs, then each job's three shards as three processes at once.
    await Promise.all([rank1(extractArgs(at('store'))), rank1(ablateArgs(at('ablation'))), rank1(evalArgs(at('eval.jsonl')))]);
    await Promise.all(shards.map((i) => rank1(extractArgs(at(`store-${i}`)), slurm(i))));
    await Promise.all(shards.map((i) => rank1([...ablateArgs(at(`ablation-${i}`)), '--shards', '3'], cleanEnv({ JOB_COMPLETION_INDEX: String(i) }))));
    await Promise.all(shards.map((i) => rank1([...evalArgs(at(`eval-${i}.jsonl`)), '--shard', `${i}/3`])));

    // The store: merged in another order than the shards' numbers; the same rows, tokens and acts bytes.
    await rank1(['store', 'merge', at('merged-store'), at('store-2'), at('store-0'), at('store-1')]);
    const whole = await readStoreIndex(at('store'));
    const merged = await readStoreIndex(at('merged-store'));
    expect(whole.examples).toBe(7);
    expect(merged.examples).toBe(whole.examples);
    expect(merged.tokens).toBe(whole.tokens);
    expect(merged.complete).toBe(true);
    expect(merged.shard).toBeUndefined();
    expect((await readStoreIndex(at('store-1'))).shard).toMatchObject({ index: 1, count: 3, from: 2, to: 4, rows: 7 });
    for (const tensor of ['acts', 'mlp', 'input_ids', 'example_index']) {
      expect((await storeBytes(at('merged-store'), tensor)).equals(await storeBytes(at('store'), tensor)), tensor).toBe(true);
    }
    expect((await storeBytes(at('merged-store'), 'acts')).length).toBe(whole.tokens * whole.hooks.length * 2);
    await fs.access(path.join(at('merged-store'), 'tokenizer.json'));

    // Ablation: the same draw, sequences, per-sequence KLs and every mean, to the bit; the same Table 2.
    await rank1(['ablate', '--merge', at('ablation-1'), at('ablation-0'), at('ablation-2'), '--out', at('merged-ablation')]);
    const withoutSeconds = async (folder: string) => {
      const { seconds: _seconds, ...rest } = JSON.parse(await fs.readFile(path.join(folder, 'ablation.json'), 'utf8'));
      return rest;
    };
    const ablationWhole = await withoutSeconds(at('ablation'));
    expect(ablationWhole.examples).toHaveLength(5);
    expect(await withoutSeconds(at('merged-ablation'))).toEqual(ablationWhole);
    expect((await withoutSeconds(at('ablation-0'))).examples).toHaveLength(1);
    expect(await fs.readFile(path.join(at('merged-ablation'), 'table2.md'), 'utf8')).toBe(await fs.readFile(path.join(at('ablation'), 'table2.md'), 'utf8'));

    // Eval: row for row (all but the wall clock), in problem order.
    await rank1(['eval', '--merge', at('eval-2.jsonl'), at('eval-0.jsonl'), at('eval-1.jsonl'), '--out', at('merged-eval.jsonl')]);
    const rows = async (file: string) => (await fs.readFile(file, 'utf8')).trim().split('\n').map((line) => {
      const { seconds: _seconds, ...row } = JSON.parse(line);
      return row;
    });
    const evalWhole = await rows(at('eval.jsonl'));
    expect(evalWhole.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(await rows(at('merged-eval.jsonl'))).toEqual(evalWhole);

    // Refusals: a gap, an overlap, and a store of other settings, each named.
    await expect(rank1(['store', 'merge', at('gap'), at('store-0'), at('store-2')])).rejects.toMatchObject({ stderr: expect.stringMatching(/gap: shard 1\/3 \(rows 2\.\.3\) missing/) });
    await expect(rank1(['store', 'merge', at('overlap'), at('store-0'), at('store-1'), at('store-1'), at('store-2')])).rejects.toMatchObject({ stderr: expect.stringMatching(/overlap: .*store-1 and .*store-1 are both shard 1\/3/) });
    const other = at('store-2-other');
    await fs.cp(at('store-2'), other, { recursive: true });
    const otherIndex = JSON.parse(await fs.readFile(path.join(other, 'index.json'), 'utf8'));
    await fs.writeFile(path.join(other, 'index.json'), JSON.stringify({ ...otherIndex, max_tokens: 99 }));
    await expect(rank1(['store', 'merge', at('misfit'), at('store-0'), at('store-1'), other])).rejects.toMatchObject({ stderr: expect.stringMatching(/store-2-other is not a shard of the same extraction as .*store-0: its max_tokens \(--max-tokens\) is 99, not 2048/) });
    await expect(rank1(['eval', '--merge', at('eval-0.jsonl'), at('eval-2.jsonl'), '--out', at('gap.jsonl')])).rejects.toMatchObject({ stderr: expect.stringMatching(/gap: shard 1\/3/) });
    await expect(rank1(['ablate', '--merge', at('ablation-0'), at('ablation-0'), at('ablation-1'), '--out', at('overlap-ablation')])).rejects.toMatchObject({ stderr: expect.stringMatching(/overlap: .*ablation-0.*shard 0\/3/) });
  }, 600_000);
});
