import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runDemo } from '../src/cli/demo.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';

describe('rank1 demo', () => {
  it('trains rank-1 adapters on a bf16 Qwen2, lowers held-out loss and ranks adapters by ablation KL', async () => {
    const outDir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-demo-'));
    try {
      const lines: string[] = [];
      const { lossBefore, lossAfter, ablations } = await runDemo({ backend: getCpuBackend(), outDir, epochs: 2, seed: 42, log: (l) => lines.push(l) });
      expect(lossAfter).toBeLessThan(lossBefore - 0.5);
      expect(ablations).toHaveLength(21);
      expect(ablations[0]!.kl).toBeGreaterThan(0);
      expect(ablations[0]!.kl).toBeGreaterThanOrEqual(ablations[20]!.kl);
      expect(await fs.readdir(outDir)).toEqual(expect.arrayContaining(['adapter_config.json', 'adapter_model.safetensors', 'loss-curve.svg']));
      expect(lines.join('\n')).toMatch(/adapters whose ablation moves the output most/);
    } finally {
      await fs.rm(outDir, { recursive: true, force: true });
    }
  });
});
