// rank1 train's memory check (checkTrainingMemory) estimates the step the trainer will run: with the
// trainer's default layer token chunk unless --layer-chunk says otherwise (0: whole layers).
import * as path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { checkTrainingMemory } from '../src/cli/train-command.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { DEFAULT_LAYER_TOKEN_CHUNK } from '../src/train/trainer.ts';

const loaded = await loadQwen2Checkpoint(path.join(import.meta.dirname, 'fixtures/qwen2/tiny-f32'), getCpuBackend());
const { model } = loaded;
afterAll(() => model.dispose());

/** The activations figure the check prints, in the units it prints. */
function printedActivations(layerChunk: number | undefined, longest: number): string {
  const lines: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    checkTrainingMemory(model, 'adapter', { microBatch: 1, gradientCheckpointing: true, memoryLimit: 2 ** 40, ...(layerChunk !== undefined ? { layerChunk } : {}) }, longest);
  } finally {
    spy.mockRestore();
  }
  const match = /activations (\S+ \S+) for micro-batch/.exec(lines.join(''));
  if (!match) throw new Error(`no activations figure in ${JSON.stringify(lines)}`);
  return match[1]!;
}

describe('rank1 train memory check', () => {
  it('counts the layer token chunk the trainer uses: --layer-chunk 4 below whole layers, the default equal to --layer-chunk DEFAULT', () => {
    const longest = 2 * DEFAULT_LAYER_TOKEN_CHUNK + 64;
    const whole = printedActivations(0, longest);
    const chunked = printedActivations(4, longest);
    const byDefault = printedActivations(undefined, longest);
    expect(byDefault).toBe(printedActivations(DEFAULT_LAYER_TOKEN_CHUNK, longest));
    expect(byDefault).not.toBe(whole);
    expect(chunked).not.toBe(whole);
    expect(chunked).not.toBe(byDefault);
  });
});
