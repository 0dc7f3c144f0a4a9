// The README's real-model memory table is bench/real-model-memory.ts's output, verbatim: one source of truth,
// so a change to the estimator (src/train/memory.ts) that is not carried into the README fails here.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { memoryTable, modelMemory, MODELS } from '../bench/real-model-memory.ts';

describe('the README memory table', () => {
  it('is the script\'s table', () => {
    const readme = fs.readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const table = memoryTable();
    expect(table.split('\n').length).toBe(2 + 2 * MODELS.length);
    expect(readme.includes(`${table}\n`), 'README.md\'s memory table differs from `npx tsx bench/real-model-memory.ts`: paste its output').toBe(true);
  });

  it('meets issue 18\'s targets: Qwen2.5-32B at 20 000 tokens ≤ 74 GiB with offload, Qwen2.5-1.5B ≤ 8 GiB with the defaults', () => {
    const [, qwen15] = MODELS.find(([name]) => name === 'Qwen2.5-1.5B')!;
    const [, qwen32] = MODELS.find(([name]) => name === 'Qwen2.5-32B')!;
    expect(modelMemory('Qwen2.5-32B', qwen32, 20000).trainOffloaded.total).toBeLessThanOrEqual(74 * 2 ** 30);
    expect(modelMemory('Qwen2.5-1.5B', qwen15, 20000).train.total).toBeLessThanOrEqual(8 * 2 ** 30);
  });
});
