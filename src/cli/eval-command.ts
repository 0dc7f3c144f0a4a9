// `rank1 eval`: a model (optionally with a rank-1 adapter) on AIME24, MATH500 or GPQA-Diamond, one results
// row per problem, resumable, optionally with some adapters zero-ablated (--ablate); and `rank1 eval --compare …`,
// the paper's Table 1 (and Table 2, from ablated runs) from results files.
// Results and the summary go to stdout, progress and notes to stderr.
import * as path from 'node:path';
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE, findChatTemplate } from '../model/chat-template.ts';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../model/load.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { withHooks } from '../model/hook-registry.ts';
import { adapterModules, resolveModuleSelection, selectionLabel, zeroAblationHooks } from '../model/adapter-select.ts';
import { BENCHMARKS, isBenchmarkName, loadBenchmark, type BenchmarkName } from '../eval/benchmarks.ts';
import { buildCompareTable, formatCompareTable, parseCompareSpec } from '../eval/compare.ts';
import { DEFAULT_MAX_TOKENS, modelBatchCompleter, modelCompleter, runEval, type EvalProgress } from '../eval/run.ts';
import { mergeResults, writeEvalShardFile } from '../eval/merge.ts';
import { describeShard, isWhole, resolveShard, shardRecord, shardSlice } from '../io/shard.ts';
import { note } from './io.ts';
import { checkEndpointOptions, evalEndpointRun, type EvalEndpointOptions } from './eval-endpoint-command.ts';

/** With `endpoint` (./eval-endpoint-command.ts), `model` is the served model's name. */
export interface EvalCommandOptions extends EvalEndpointOptions {
  model?: string;
  adapter?: string;
  tokenizer?: string;
  bench?: string;
  data?: string;
  out?: string;
  maxTokens?: number;
  limit?: number;
  /** Problems decoded together. */
  batch?: number;
  backend?: BackendName | 'auto';
  compare?: string[];
  json?: boolean;
  /** Adapters zero-ablated for the whole generation (a module selection: mlp, attention, q_proj, module paths). */
  ablate?: string;
  /** Only shard I/N of the problems (io/shard.ts; default from a Slurm array or Kubernetes Indexed Job). */
  shard?: string;
  shards?: number;
  /** Results files of the shards of one run, joined into --out (`rank1 eval --merge`). */
  merge?: string[];
}

/** The action of `rank1 eval`: compares results files when --compare is given, else runs an evaluation. */
export async function evalCommand(options: EvalCommandOptions): Promise<void> {
  if (options.merge !== undefined && options.merge.length > 0) {
    if (!options.out) throw new Error('eval --merge FILE… needs --out (the merged results file)');
    const { rows, summary } = await mergeResults(options.out, options.merge);
    note(`merged ${options.merge.length} shard(s): ${rows.length} problems → ${options.out}`);
    process.stdout.write(`${JSON.stringify({ bench: rows[0]?.bench, n: summary.n, correct: summary.correct, accuracy: summary.accuracy, meanTokens: summary.meanTokens, out: options.out })}\n`);
    return;
  }
  if (options.compare !== undefined && options.compare.length > 0) {
    const runOptions = (['model', 'adapter', 'tokenizer', 'bench', 'data', 'out', 'limit', 'ablate'] as const).filter((k) => options[k] !== undefined);
    if (runOptions.length > 0) throw new Error(`--compare reads results files only; drop ${runOptions.map((k) => `--${k}`).join(', ')}`);
    await evalCompareCommand({ compare: options.compare, json: options.json ?? false });
    return;
  }
  await evalRunCommand(options);
}

export async function evalCompareCommand(options: { compare: readonly string[]; json: boolean }): Promise<void> {
  const table = await buildCompareTable(options.compare.map(parseCompareSpec));
  for (const warning of table.warnings) note(`warning: ${warning}`);
  process.stdout.write(options.json ? `${JSON.stringify(table, null, 2)}\n` : formatCompareTable(table));
}

/** `results/math500-2025-01-31T12-00-00-000Z.jsonl` */
export function defaultResultsPath(bench: BenchmarkName, date = new Date()): string {
  return path.join('results', `${bench}-${date.toISOString().replace(/[:.]/g, '-')}.jsonl`);
}

function describeProgress({ row, done, total, correctSoFar }: EvalProgress): string {
  const shown = (s: string | null) => (s === null ? '(none)' : JSON.stringify(s.length > 40 ? `${s.slice(0, 37)}...` : s));
  return `[${done}/${total}] ${row.id}: ${row.correct ? 'correct' : row.gradeTimeout ? 'wrong (comparison timed out)' : 'wrong'} (gold ${shown(row.gold)}, got ${shown(row.extracted)}), `
    + `${row.tokensGenerated} tokens (${row.stopReason}), ${row.seconds.toFixed(1)} s; accuracy so far ${correctSoFar}/${done}`;
}

export async function evalRunCommand(options: EvalCommandOptions): Promise<void> {
  const { model: modelDir, bench, data } = options;
  if (!modelDir || !bench || !data) {
    const missing = [!modelDir && '--model', !bench && '--bench', !data && '--data'].filter(Boolean);
    throw new Error(`eval needs ${missing.join(', ')} (or --compare to print Table 1 from results files)`);
  }
  if (!isBenchmarkName(bench)) throw new Error(`--bench must be one of ${BENCHMARKS.join(', ')}, got "${bench}"`);
  if (options.endpoint !== undefined) checkEndpointOptions(options);
  if (options.ablate !== undefined && !options.adapter) throw new Error('--ablate removes adapters of --adapter: pass the adapter folder too');
  let problems = await loadBenchmark(bench, data);
  if (options.limit !== undefined) problems = problems.slice(0, options.limit);
  const { shard, source: shardSource } = resolveShard(options);
  const sharded = !isWhole(shard);
  const allProblems = problems.length;
  if (sharded) {
    problems = shardSlice(problems, shard);
    note(`${describeShard(shard)} (${shardSource}): problems ${problems[0]?.index ?? '-'}..${problems.at(-1)?.index ?? '-'} of ${allProblems}`);
  }

  const tokenizerSource = options.tokenizer ?? modelDir;
  const tokenizer = await loadTokenizer(tokenizerSource);
  if (!tokenizer) throw new Error(`no tokenizer.json in ${tokenizerSource}: eval needs a tokenizer (pass --tokenizer FILE)`);
  // The model folder's chat template, else the tokenizer folder's, else the built-in Qwen2.5-Instruct one.
  const tokenizerDir = options.tokenizer === undefined ? undefined : options.tokenizer.endsWith('.json') ? path.dirname(options.tokenizer) : options.tokenizer;
  const found = (await findChatTemplate(modelDir)) ?? (tokenizerDir === undefined ? null : await findChatTemplate(tokenizerDir));
  note(`chat template: ${found ? found.source : 'built-in Qwen2.5-Instruct'}`);

  if (options.endpoint !== undefined) {
    const out = options.out ?? defaultResultsPath(bench);
    if (sharded) await writeEvalShardFile(out, { bench, data, shard: shardRecord(allProblems, shard) });
    await evalEndpointRun(options, {
      model: modelDir, bench, data, problems, tokenizer, ...(tokenizerDir === undefined ? {} : { tokenizerDir }), chatTemplate: found?.template ?? QWEN25_INSTRUCT_CHAT_TEMPLATE,
      out, ...(options.maxTokens === undefined ? {} : { maxTokens: options.maxTokens }), describeProgress,
    });
    return;
  }
  const choice = await initBackend(options.backend ?? 'auto');
  note(`backend: ${choice.reason}`);
  const { model, config, warnings } = await loadQwen2Checkpoint(modelDir, choice.backend);
  // s1's budget, unless the model's context is shorter (a small model would only degenerate past it).
  const maxTokens = options.maxTokens ?? Math.min(DEFAULT_MAX_TOKENS, config.maxPositionEmbeddings);
  for (const warning of warnings) note(`warning: ${warning}`);
  let ablation: { modules: string[]; label: string } | undefined;
  if (options.adapter) {
    const adapters = await loadPeftAdapter(options.adapter, model);
    note(`adapter: ${options.adapter}`);
    if (options.ablate !== undefined) {
      const available = adapterModules(adapters);
      const modules = resolveModuleSelection(options.ablate, available, `adapter ${options.adapter}`);
      ablation = { modules, label: selectionLabel(modules, available) };
      note(`ablated: ${ablation.label} (${modules.length} of ${available.length} adapters zero-ablated for the whole generation)`);
    }
  }

  const out = options.out ?? defaultResultsPath(bench);
  if (sharded) await writeEvalShardFile(out, { bench, data, shard: shardRecord(allProblems, shard) });
  const batchSize = options.batch ?? 1;
  note(`${bench}: ${problems.length} problem(s) from ${data}, up to ${maxTokens} tokens each, greedy, ${batchSize > 1 ? `${batchSize} decoded together` : 'one at a time'}; results → ${out}${options.out ? '' : ' (pass --out with this file to resume)'}`);
  const result = await withHooks(model, zeroAblationHooks(ablation?.modules ?? []), () => runEval({
    bench,
    problems,
    tokenizer,
    chatTemplate: found?.template ?? QWEN25_INSTRUCT_CHAT_TEMPLATE,
    complete: modelCompleter(model),
    completeBatch: modelBatchCompleter(model),
    batchSize,
    out,
    maxTokens,
    onResume: ({ skipped, truncatedTail, extraRows }) => {
      note(`resuming ${out}: ${skipped} problem(s) already done${truncatedTail ? '; dropped a cut-off last line' : ''}${extraRows ? `; ${extraRows} row(s) beyond --limit kept but not counted` : ''}`);
    },
    onProblem: (progress) => note(describeProgress(progress)),
    ...(ablation ? { ablated: ablation.label } : {}),
  }));
  const { summary } = result;
  process.stdout.write(`${JSON.stringify({
    bench, n: summary.n, correct: summary.correct, accuracy: summary.accuracy, meanTokens: summary.meanTokens, generated: result.generated, out,
    ...(ablation ? { ablated: ablation.label } : {}),
  })}\n`);
}
