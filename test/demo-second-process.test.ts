// The demo's second process when it fails: both of its steps are refused with its own message (what it could
// not read), and no progress of it is shown; stopped while it trains (the demo failed first), it ends at once
// and its steps are refused saying so. (Its success path — the same weights and generations as in one
// process, its steps marked as run alongside — is test/demo.test.ts's, through the CLI.)
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecondProcess } from '../src/demo/second-process.ts';
import { QUICK_SIZES } from '../src/demo/settings.ts';
import { makeWorld, worldOptionsFromManifest, WORLD_FILES, type WorldManifest, type WorldOptions } from '../src/world/make.ts';
import { TOY_BASE } from '../src/demo/pipeline.ts';

describe('the demo\'s second process', () => {
  let out = '';
  beforeAll(async () => {
    out = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-second-process-'));
  });
  afterAll(async () => {
    await fs.rm(out, { recursive: true, force: true });
  });

  it('refuses both of its steps with its own error when it cannot read the world', async () => {
    const updates: string[] = [];
    const progress = { elapsedSeconds: 0, update: (value: number, total: number, unit: string) => updates.push(`${value}/${total} ${unit}`) };
    // No world folder in `out`: the second process fails reading its held-out problems.
    const job = { out, base: path.join(out, 'no-base'), sizes: QUICK_SIZES, mode: 'quick' as const, seed: 1, worldOptions: { seed: 1 } as WorldOptions };
    const second = SecondProcess.start(job, () => {});
    await expect(second.result('train full', progress)).rejects.toThrow(/second process \(the full finetune and its evaluation\) failed: .*world[/\\]heldout\.jsonl/);
    await expect(second.result('eval full', progress)).rejects.toThrow(/second process .*failed: .*heldout\.jsonl/);
    expect(updates).toEqual([]);
    second.stop(); // already exited: nothing to end, no error
  }, 60_000);

  it('ends when stopped mid-training, and its steps are refused saying it exited', async () => {
    const manifest = JSON.parse(await fs.readFile(path.join(TOY_BASE, WORLD_FILES.world), 'utf8')) as WorldManifest;
    const worldOptions = worldOptionsFromManifest(manifest);
    const dir = path.join(out, 'stopped');
    await makeWorld(path.join(dir, 'world'), worldOptions);
    const job = { out: dir, base: TOY_BASE, sizes: QUICK_SIZES, mode: 'quick' as const, seed: 1, worldOptions };
    const lines: string[] = [];
    const second = SecondProcess.start(job, (line) => lines.push(line));
    let training!: () => void;
    const started = new Promise<void>((resolve) => { training = resolve; });
    const progress = { elapsedSeconds: 0, update: (_value: number, _total: number, unit: string) => { if (unit === 'steps') training(); } };
    const result = second.result('train full', progress);
    await started; // its first optimizer step is done: it is mid-training
    second.stop();
    await expect(result).rejects.toThrow(/second process \(the full finetune\) exited with SIGTERM before it finished/);
    await expect(second.result('eval full', progress)).rejects.toThrow(/exited with SIGTERM/);
    expect(lines.some((l) => l.includes('(full)'))).toBe(true); // its log lines reached this process
  }, 300_000);
});
