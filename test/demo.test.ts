import { describe, expect, it } from 'vitest';
import { runDemo } from '../src/cli/demo.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';

describe('rank1 demo', () => {
  it('recovers the hidden rank-1 direction with rank-1 adapters on a frozen bf16 base', async () => {
    const lines: string[] = [];
    const { finalLoss, cosine } = await runDemo({ backend: getCpuBackend(), steps: 120, seed: 42, log: (l) => lines.push(l) });
    expect(lines[0]).toMatch(/trainable: 352 adapter scalars/);
    expect(finalLoss).toBeLessThan(1e-3); // starts near 1e-1
    expect(cosine).toBeGreaterThan(0.95);
  });
});
