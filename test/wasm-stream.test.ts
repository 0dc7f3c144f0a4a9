import { describe, expect, it } from 'vitest';
import { WasmStream } from '../bench/wasm-stream.ts';

describe('bench/wasm-stream (the decode bench\'s memory probe)', () => {
  it('reads every 64-byte block once on one thread and on two, and reports a rate', async () => {
    const stream = new WasmStream(4 * 2 ** 20);
    try {
      // each pass checks its block count (bytes / 64) and throws on a miscount
      expect(stream.oneThread()).toBeGreaterThan(0);
      expect(await stream.twoThreads()).toBeGreaterThan(0);
    } finally {
      await stream.close();
    }
  });

  it('refuses sizes whose halves are not whole blocks or whose count f32 could not hold', () => {
    for (const bytes of [0, 64, 1000, 2 ** 30 + 128, 1.5]) {
      expect(() => new WasmStream(bytes)).toThrow(/WasmStream: bytes must be a positive multiple of 128 up to 1 GiB, got/);
    }
  });
});
