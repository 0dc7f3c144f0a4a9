// `rank1 extract`'s progress counts each token once (issue 20, must 10): the tokens it reports, on a fresh run
// with several shards and on a resumed one, are the tokens the store holds when it is done (a resumed run once
// printed 113 832 for 58 858 stored: shards written during the run were counted again).
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../src/model/load.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { syntheticRows, tokensRowRecord } from '../src/train/data-synthetic.ts';
import { runExtract, type ExtractJobOptions, type ExtractProgress } from '../src/jobs/extract.ts';

const fixtures = path.resolve(import.meta.dirname, 'fixtures/qwen2');
const modelDir = path.join(fixtures, 'tiny-f32');
const adapterDir = path.join(fixtures, 'adapter-tiny-f32');

describe('rank1 extract progress', () => {
  let dir: string;
  let model: Qwen2Model;
  let options: ExtractJobOptions;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-extract-progress-'));
    const data = path.join(dir, 'rows.jsonl');
    const rows = syntheticRows(24, 3, { vocabSize: 64, minLength: 10, maxLength: 30 });
    await fs.writeFile(data, `${rows.map((r) => JSON.stringify(tokensRowRecord(r))).join('\n')}\n`);
    ({ model } = await loadQwen2Checkpoint(modelDir, getCpuBackend()));
    await loadPeftAdapter(adapterDir, model);
    options = { model, tokenizer: null, template: '', data, out: path.join(dir, 'store'), modelDir, adapterDir, shardTokens: 60 };
  });
  afterAll(async () => {
    model?.dispose();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('reports the tokens the store holds, fresh (several shards) and resumed', async () => {
    const first: ExtractProgress[] = [];
    const partial = await runExtract({ ...options, limit: 12 }, { onProgress: (p) => first.push(p) });
    expect(partial.shards.length).toBeGreaterThan(1);
    expect(first.at(-1)!.tokens).toBe(partial.tokens);
    const resumed: ExtractProgress[] = [];
    const whole = await runExtract(options, { onProgress: (p) => resumed.push(p) });
    expect(whole.complete).toBe(true);
    expect(resumed[0]!.tokens).toBe(partial.tokens);
    expect(resumed.at(-1)!.tokens).toBe(whole.tokens);
    for (let i = 1; i < resumed.length; i++) expect(resumed[i]!.tokens).toBeGreaterThan(resumed[i - 1]!.tokens);
  }, 60_000);
});
