// Every op's backward against central finite differences, on random shapes (property tests), CPU backend.
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { checkGradients } from './helpers/op-check.ts';
import { opSpecs } from './helpers/op-specs.ts';

describe('gradients match finite differences (cpu)', () => {
  for (const spec of opSpecs) {
    it(spec.name, async () => {
      await fc.assert(
        fc.asyncProperty(spec.cases, (c) => checkGradients(c, getCpuBackend(), spec.gradTolerance)),
        { numRuns: 12, seed: 20251125 },
      );
    });
  }
});
