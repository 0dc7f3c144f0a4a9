// What every rank1 case shares: the implementation label and the one-element read that ends an iteration.
import type { Backend, Tensor } from '../../src/tensor/index.ts';
import type { Implementation, Runnable } from '../harness.ts';

export function rank1Implementation(backend: Backend): Implementation {
  return { name: `rank1 ${backend.name}`, device: backend.name, kind: 'rank1' };
}

/**
 * Element [0] of t, read back: on WebGPU the read waits for every kernel queued before it, so an
 * iteration that ends here has really done its work, while copying back only 4 bytes.
 */
export async function readFirstElement(t: Tensor): Promise<number> {
  const data = await t.backend.read({ storage: t.storage, shape: [1], strides: [1], offset: t.offset });
  return data[0]!;
}

/** A runnable that applies `op` to `inputs` once per iteration, reads element [0], and frees the output. */
export function opRunnable(inputs: readonly Tensor[], op: () => Tensor): Runnable {
  return {
    async iterate() {
      const out = op();
      try {
        return await readFirstElement(out);
      } finally {
        out.dispose();
      }
    },
    dispose() {
      for (const t of inputs) t.dispose();
    },
  };
}
