// What every benchmark case is, and how one is measured: a warm-up call that also checks the answer,
// then tinybench under a per-case time budget, so that a 2-core machine with a software GPU finishes.
import { Bench } from 'tinybench';

/** One measurable thing, set up and ready: each iterate() does the work and waits until it is done. */
export interface Runnable {
  /**
   * Runs the operation once and waits for its result (reading back one element, which waits for the
   * device queue). Returns that element, which the warm-up call checks.
   */
  iterate(): Promise<number>;
  dispose(): void | Promise<void>;
}

export type CaseGroup = 'matmul' | 'attention' | 'rmsnorm' | 'loss';

/** Which implementation ran: a rank1 backend or a peer library. */
export interface Implementation {
  /** 'rank1 cpu', 'tfjs-wasm', 'gpu.js webgpu', … */
  name: string;
  /** What it computes on, so --backend can filter peers too. */
  device: 'cpu' | 'webgpu';
  kind: 'rank1' | 'peer';
}

export interface CaseSpec {
  group: CaseGroup;
  /** 'matmul f32 1024²', 'attention fwd T=256', … */
  name: string;
  /** The size used to project slow cases (n for matmul, T for attention, H for rmsNorm). */
  size: number;
  impl: Implementation;
  /** Floating-point operations per iteration (matmul 2·m·n·k; attention see cases/attention.ts). */
  flops?: number;
  /** Bytes moved per iteration, for memory-bound cases (rmsNorm). */
  bytes?: number;
  /** The value iterate() must return (element [0] of the output), and how far off it may be. */
  expected?: { value: number; tolerance: number };
  setup(): Promise<Runnable>;
}

export interface CaseResult {
  group: CaseGroup;
  case: string;
  size: number;
  impl: string;
  device: 'cpu' | 'webgpu';
  kind: 'rank1' | 'peer';
  /** Present when the case did not run; says why. */
  skipped?: string;
  meanMs?: number;
  p50Ms?: number;
  minMs?: number;
  maxMs?: number;
  sdMs?: number;
  /** Relative margin of error of the mean, percent (95%). */
  rmePercent?: number;
  samples?: number;
  /** The first (cold) call: includes shader compilation, JIT and first-touch allocation. */
  firstCallMs?: number;
  /** True when the case was so slow that the cold call is the only sample. */
  singleColdSample?: boolean;
  flops?: number;
  gflops?: number;
  bytes?: number;
  gbps?: number;
  check?: { value: number; expected: number; tolerance: number; ok: boolean };
}

export interface MeasureSettings {
  /** tinybench `time`: milliseconds of samples to collect per case (after warm-up). */
  budgetMs: number;
  /** tinybench `iterations`: the fewest samples per case. */
  minIterations: number;
  /** A cold call slower than this is the only sample (a second call would cost too long). */
  singleSampleOverMs: number;
}

export function resultBase(spec: CaseSpec): CaseResult {
  return {
    group: spec.group, case: spec.name, size: spec.size,
    impl: spec.impl.name, device: spec.impl.device, kind: spec.impl.kind,
    flops: spec.flops, bytes: spec.bytes,
  };
}

export function skippedResult(spec: CaseSpec, reason: string): CaseResult {
  return { ...resultBase(spec), skipped: reason };
}

function errorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!.slice(0, 300);
}

/** Sets up, warms up and checks, then samples with tinybench. Never throws: failures become `skipped`. */
export async function measureCase(spec: CaseSpec, settings: MeasureSettings): Promise<CaseResult> {
  const base = resultBase(spec);
  let runnable: Runnable;
  try {
    runnable = await spec.setup();
  } catch (error) {
    return { ...base, skipped: `setup failed: ${errorMessage(error)}` };
  }
  try {
    const start = performance.now();
    const value = await runnable.iterate();
    const firstCallMs = performance.now() - start;
    let check: CaseResult['check'];
    if (spec.expected) {
      const { value: expected, tolerance } = spec.expected;
      check = { value, expected, tolerance, ok: Math.abs(value - expected) <= tolerance };
    }

    let stats: Pick<CaseResult, 'meanMs' | 'p50Ms' | 'minMs' | 'maxMs' | 'sdMs' | 'rmePercent' | 'samples'>;
    const singleColdSample = firstCallMs > settings.singleSampleOverMs;
    if (singleColdSample) {
      stats = { meanMs: firstCallMs, p50Ms: firstCallMs, minMs: firstCallMs, maxMs: firstCallMs, sdMs: 0, rmePercent: 0, samples: 1 };
    } else {
      const bench = new Bench({
        time: settings.budgetMs,
        iterations: settings.minIterations,
        // The cold call above already compiled and allocated; fast cases get a short extra warm-up.
        warmup: firstCallMs < settings.budgetMs / 8,
        warmupTime: Math.min(200, settings.budgetMs / 4),
        warmupIterations: 1,
        throws: true,
      });
      bench.add(`${spec.name} ${spec.impl.name}`, () => runnable.iterate(), { async: true });
      const [task] = await bench.run();
      const result = task!.result;
      if (result.state !== 'completed') {
        const why = result.state === 'errored' ? errorMessage(result.error) : result.state;
        return { ...base, firstCallMs, check, skipped: `failed while sampling: ${why}` };
      }
      const latency = result.latency;
      stats = {
        meanMs: latency.mean, p50Ms: latency.p50, minMs: latency.min, maxMs: latency.max,
        sdMs: latency.sd, rmePercent: latency.rme, samples: latency.samplesCount,
      };
    }
    const seconds = stats.meanMs! / 1000;
    return {
      ...base,
      ...stats,
      firstCallMs,
      singleColdSample: singleColdSample || undefined,
      gflops: spec.flops ? spec.flops / seconds / 1e9 : undefined,
      gbps: spec.bytes ? spec.bytes / seconds / 1e9 : undefined,
      check,
    };
  } catch (error) {
    return { ...base, skipped: `failed: ${errorMessage(error)}` };
  } finally {
    try {
      await runnable.dispose();
    } catch {
      // A failed dispose must not hide the measurement; the process exits at the end anyway.
    }
  }
}
