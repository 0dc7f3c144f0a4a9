// The demo's second process when it fails: both of its steps are refused with its own message (what it could
// not read), and no progress of it is shown. (Its success path — the same weights and generations as in one
// process, its steps marked as run alongside — is test/demo.test.ts's, through the CLI.)
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecondProcess } from '../src/demo/second-process.ts';
import { QUICK_SIZES } from '../src/demo/settings.ts';
import type { WorldOptions } from '../src/world/make.ts';

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
});
