// `rank1 ablate --loss-chunk N`: the CLI takes the KL and cross-entropy's chunk size (AblationOptions.lossChunk)
// and a small chunk gives the default's numbers within float tolerance (the toy model, models/toy).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');
const rank1 = (args: string[]) => run(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { cwd: root, maxBuffer: 64 << 20 });

interface Ablation {
  full_ce: number;
  groups: { name: string; kl: number; ce: number }[];
}

describe('rank1 ablate --loss-chunk', () => {
  let dir: string;
  let adapter: string;
  let traces: string;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-ablate-chunk-'));
    const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
    adapter = path.join(dir, 'adapter');
    await savePeftAdapter(adapter, randomRankOneAdapters(model.dims, 1, getCpuBackend()));
    model.dispose();
    traces = path.join(dir, 'traces.jsonl');
    await fs.writeFile(traces, Array.from({ length: 2 }, (_, i) => JSON.stringify({
      question: `What is the last digit of ${i + 12} + ${i + 7}?`,
      deepseek_thinking_trajectory: `Okay, ${i + 12} + ${i + 7} = ${2 * i + 19}. Let me check again. So the last digit is ${(2 * i + 19) % 10}.`,
      deepseek_attempt: `The last digit is \\boxed{${(2 * i + 19) % 10}}.`,
    })).join('\n'));
  }, 60_000);

  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('accepts the flag, and a 3-row chunk gives the default chunk\'s KL and cross-entropy', async () => {
    const args = (out: string) => ['ablate', '--model', toy, '--adapter', adapter, '--data', traces, '--out', out, '--examples', 'all', '--min-tokens', '10', '--backend', 'cpu', '--no-progress'];
    const whole = path.join(dir, 'default');
    const chunked = path.join(dir, 'chunk-3');
    await Promise.all([rank1(args(whole)), rank1([...args(chunked), '--loss-chunk', '3'])]);
    const read = async (out: string) => JSON.parse(await fs.readFile(path.join(out, 'ablation.json'), 'utf8')) as Ablation;
    const [a, b] = await Promise.all([read(whole), read(chunked)]);
    expect(b.full_ce).toBeCloseTo(a.full_ce, 5);
    expect(b.groups.map((g) => g.name)).toEqual(a.groups.map((g) => g.name));
    expect(a.groups.some((g) => g.kl > 1e-4)).toBe(true);
    for (const [i, g] of a.groups.entries()) {
      expect(Math.abs(b.groups[i]!.kl - g.kl)).toBeLessThanOrEqual(1e-5 + 1e-4 * Math.abs(g.kl));
      expect(b.groups[i]!.ce).toBeCloseTo(g.ce, 5);
    }
    await expect(rank1([...args(path.join(dir, 'bad')), '--loss-chunk', '0'])).rejects.toMatchObject({ stderr: expect.stringMatching(/loss-chunk/) });
  }, 120_000);
});
