// `rank1 demo`: the paper end to end on the toy world, from the shipped base (src/demo/pipeline.ts), with one
// progress display on stderr; Table 1, the headline numbers, the report's path and the measured time on stdout.
import * as path from 'node:path';
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { formatCompareTable } from '../eval/compare.ts';
import { DEMO_STEPS, runDemo } from '../demo/pipeline.ts';
import { DEMO_FILES, shownPath, type DemoEndpoint, type DemoSummary } from '../demo/folder.ts';
import { DemoProgress, formatSeconds } from '../demo/progress.ts';
import { DEMO_SIZES, QUICK_SIZES } from '../demo/settings.ts';

export interface DemoCommandOptions {
  out: string;
  quick?: boolean;
  seed: number;
  backend: BackendName | 'auto';
  endpoint?: string;
  explainerModel?: string;
  apiKeyEnv: string;
  /** The full finetune in this process rather than in a second one alongside. */
  oneProcess?: boolean;
}

/** --endpoint and --explainer-model: both or neither, and a URL. */
export function demoEndpoint(options: Pick<DemoCommandOptions, 'endpoint' | 'explainerModel' | 'apiKeyEnv'>): DemoEndpoint | undefined {
  if (options.endpoint === undefined && options.explainerModel === undefined) return undefined;
  if (options.endpoint === undefined) throw new Error('--explainer-model needs --endpoint URL (an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1)');
  if (options.explainerModel === undefined || options.explainerModel.trim() === '') throw new Error('--endpoint needs --explainer-model NAME (the model name sent to the endpoint)');
  let url: URL;
  try {
    url = new URL(options.endpoint);
  } catch {
    throw new Error(`--endpoint must be a URL such as http://127.0.0.1:8000/v1, got "${options.endpoint}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--endpoint must be an http(s) URL, got "${options.endpoint}"`);
  const apiKey = process.env[options.apiKeyEnv];
  return { url: url.toString(), model: options.explainerModel, ...(apiKey ? { apiKey } : {}) };
}

/** Table 1 and the headline numbers, as printed at the end of the run. */
export function demoResultText(summary: DemoSummary, out: string): string {
  const lines: string[] = [];
  if (summary.table1) {
    lines.push(`Table 1 and Table 2 (toy world, first ${summary.table1.problems} held-out problems; accuracy %):`, formatCompareTable(summary.table1.compare).trimEnd());
  }
  if (summary.ablation) {
    const a = summary.ablation;
    lines.push(`KL / cross-entropy when adapters are ablated (${a.examples} traces): KL(full ‖ ablated) MLP adapters ${a.mlp.toFixed(3)}, attention adapters ${a.attention.toFixed(3)}, all ${a.all.toFixed(3)}; `
      + `largest single adapters ${a.topAdapters.slice(0, 3).map((t) => `${t.name} ${t.kl.toFixed(3)}`).join(', ')}`);
  }
  if (summary.sae) lines.push(`SAE on ${summary.store?.tokens ?? '?'} tokens: held-out FVU ${summary.sae.fvu.toFixed(3)}, L0 ${summary.sae.l0.toFixed(1)}, ${summary.sae.live} live / ${summary.sae.dead} dead latents`);
  lines.push(`report: ${shownPath(path.join(out, DEMO_FILES.report))}`);
  lines.push(`demo finished in ${formatSeconds(summary.totalSeconds)} (${summary.totalSeconds.toFixed(1)} s measured, ${summary.mode} run, ${summary.backend.name} backend)`);
  return `${lines.join('\n')}\n`;
}

export async function demoCommand(options: DemoCommandOptions): Promise<void> {
  const endpoint = demoEndpoint(options);
  const choice = await initBackend(options.backend);
  const quick = options.quick === true;
  process.stderr.write(`rank1 demo${quick ? ' --quick' : ''}: the paper end to end on the toy world → ${options.out}/ (seed ${options.seed}; backend: ${choice.reason})\n`);
  const summary = await runDemo({
    out: options.out, sizes: quick ? QUICK_SIZES : DEMO_SIZES, mode: quick ? 'quick' : 'default', seed: options.seed,
    backend: choice.backend, backendReason: choice.reason, ...(endpoint ? { endpoint } : {}),
    progress: new DemoProgress(DEMO_STEPS.length), ...(options.oneProcess ? { secondProcess: false } : {}),
  });
  process.stdout.write(`\n${demoResultText(summary, options.out)}`);
}
