// PyTorch as a peer of the cross-entropy case (bench/cases/loss.ts): bench/peers/torch_cross_entropy.py runs
// F.cross_entropy forward + backward in a child process on the very logits and targets rank1 gets (written
// to a temporary file) and times itself as the harness does; the row-0 loss is checked like rank1's. The Node
// process waits meanwhile, so the two never share the cores.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resultBase, type CaseResult, type CaseSpec, type MeasureSettings } from '../harness.ts';
import { runTorchScript } from './torch.ts';
import { errorText } from './types.ts';

export interface CrossEntropyInputs { logits: Float32Array; targets: Int32Array; rows: number; vocab: number }

/** Runs the PyTorch cross-entropy forward + backward and reports it as a harness result of `spec`. */
export function torchCrossEntropyResult(spec: CaseSpec, inputs: CrossEntropyInputs, settings: MeasureSettings): CaseResult {
  const base = resultBase(spec);
  const file = path.join(os.tmpdir(), `rank1-bench-torch-ce-${process.pid}.bin`);
  try {
    const fd = fs.openSync(file, 'w');
    fs.writeSync(fd, new Uint8Array(inputs.logits.buffer, inputs.logits.byteOffset, inputs.logits.byteLength));
    fs.writeSync(fd, new Uint8Array(inputs.targets.buffer, inputs.targets.byteOffset, inputs.targets.byteLength));
    fs.closeSync(fd);
    const r = runTorchScript<{ firstMs: number; meanMs: number; minMs: number; samples: number; loss0: number }>('torch_cross_entropy.py', [
      '--rows', String(inputs.rows), '--vocab', String(inputs.vocab), '--inputs', file,
      '--time-ms', String(settings.budgetMs), '--min-samples', String(settings.minIterations),
    ]);
    const check = spec.expected
      ? { value: r.loss0, expected: spec.expected.value, tolerance: spec.expected.tolerance, ok: Math.abs(r.loss0 - spec.expected.value) <= spec.expected.tolerance }
      : undefined;
    return {
      ...base, meanMs: r.meanMs, minMs: r.minMs, samples: r.samples, firstCallMs: r.firstMs,
      ...(spec.bytes ? { gbps: spec.bytes / (r.meanMs / 1e3) / 1e9 } : {}), ...(check ? { check } : {}),
    };
  } catch (error) {
    return { ...base, skipped: errorText(error) };
  } finally {
    fs.rmSync(file, { force: true });
  }
}
