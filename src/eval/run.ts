// The evaluation loop: greedy, `batchSize` problems decoded together (generateBatch: one batched step for
// all live sequences, each with its own KV cache), each batch's results appended to the results file, in
// problem order, before the next batch starts. With a serving endpoint (`inFlight`) the problems are asked
// `inFlight` at a time, the next as soon as any answers, and the rows still appended in problem order.
import { generate, generateBatch, type GenerateResult } from '../model/generate.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { BenchmarkName, EvalProblem } from './benchmarks.ts';
import { gradeOutputBounded } from './grade.ts';
import { evalPromptIds } from './prompt.ts';
import { ResultsFileError, ResultsWriter, matchResumedRows, readResults, summarize, type ResultRow, type ResultsSummary } from './results.ts';

/** s1's generation budget (max_gen_toks 32768 in its harness). */
export const DEFAULT_MAX_TOKENS = 32768;

/** The part of a tokenizer the loop needs; `Tokenizer` has it, and tests may pass something smaller. */
export type EvalTokenizer = Pick<Tokenizer, 'encode' | 'encodeAsText' | 'specialTokens' | 'decode' | 'stopIds'>;

/**
 * A continuation as the loop records it: the ids (in process; the output is their decode), or the text and
 * token count a serving endpoint reports (./endpoint.ts).
 */
export interface EvalCompletion {
  ids?: readonly number[];
  text?: string;
  tokens?: number;
  stopReason: GenerateResult['stopReason'];
}

/** Produces the continuation of a prompt; by default greedy `generate` on the model. */
export type Completer = (promptIds: readonly number[], options: { maxTokens: number; stopIds: readonly number[] }) => Promise<EvalCompletion>;

/** Produces the continuations of several prompts at once. */
export type BatchCompleter = (prompts: readonly (readonly number[])[], options: { maxTokens: number; stopIds: readonly number[] }) => Promise<EvalCompletion[]>;

export function modelCompleter(model: Qwen2Model): Completer {
  return (promptIds, { maxTokens, stopIds }) => generate(model, promptIds, { maxTokens, stopIds });
}

export function modelBatchCompleter(model: Qwen2Model): BatchCompleter {
  return (prompts, { maxTokens, stopIds }) => generateBatch(model, prompts, { maxTokens, stopIds });
}

/** Reported after each generated problem (resumed ones are only counted). */
export interface EvalProgress {
  row: ResultRow;
  /** Problems finished so far (resumed ones included) and the total. */
  done: number;
  total: number;
  correctSoFar: number;
}

export interface RunEvalOptions {
  bench: BenchmarkName;
  problems: readonly EvalProblem[];
  tokenizer: EvalTokenizer;
  chatTemplate: string;
  complete: Completer;
  /** With batchSize > 1: decodes that many problems together. */
  completeBatch?: BatchCompleter;
  batchSize?: number;
  /**
   * Problems asked of `complete` at once (a serving endpoint): a new one starts as soon as any answers, so a
   * long answer holds up no others; rows are still appended in problem order. Instead of completeBatch.
   */
  inFlight?: number;
  out: string;
  maxTokens: number;
  /** Keep the generated text in each row (default true). */
  keepOutput?: boolean;
  /** What the caller zero-ablated for this run (selectionLabel), recorded in every row; resuming a file of
   *  another ablation is an error. */
  ablated?: string;
  onResume?: (info: { skipped: number; truncatedTail: boolean; extraRows: number }) => void;
  onProblem?: (progress: EvalProgress) => void;
  /** Wall clock in seconds; injectable for tests. */
  now?: () => number;
}

export interface RunEvalResult {
  /** One row per problem, in problem order (resumed rows included). */
  rows: ResultRow[];
  summary: ResultsSummary;
  /** Problems generated in this call (not resumed). */
  generated: number;
}

const describeAblation = (ablated: string | undefined) => (ablated === undefined ? 'no ablation' : `--ablate ${ablated}`);

/** A resumed file must hold rows of the same ablation (or none), else two models' results would mix. */
function checkResumedAblation(rows: readonly ResultRow[], ablated: string | undefined, file: string): void {
  const other = rows.find((row) => row.ablated !== ablated);
  if (other) throw new ResultsFileError(file, undefined, `holds results of ${describeAblation(other.ablated)} (problem ${other.index}), but this run is ${describeAblation(ablated)}: use another --out`);
}

export async function runEval(options: RunEvalOptions): Promise<RunEvalResult> {
  const { bench, problems, tokenizer, out, maxTokens } = options;
  const now = options.now ?? (() => performance.now() / 1000);
  const existing = await readResults(out);
  const done = matchResumedRows(existing.rows, problems, bench, out);
  checkResumedAblation(existing.rows, options.ablated, out);
  // Rows of other problems than this run's (an earlier run without --limit) stay in the file, out of the summary.
  const thisRun = new Set(problems.map((p) => p.index));
  const extraRows = [...done.keys()].filter((k) => !thisRun.has(k)).length;
  if (existing.rows.length > 0 || existing.truncatedTail) options.onResume?.({ skipped: done.size - extraRows, truncatedTail: existing.truncatedTail, extraRows });
  const writer = await ResultsWriter.open(out, existing.truncatedTail ? existing.rows : undefined);
  const stopIds = tokenizer.stopIds();
  let generated = 0;
  let correctSoFar = 0;
  const rows: ResultRow[] = [];
  const resumedCorrect = problems.filter((p) => done.get(p.index)?.correct).length;
  const batchSize = options.completeBatch && !options.inFlight ? Math.max(1, options.batchSize ?? 1) : 1;
  const pending = problems.filter((p) => !done.has(p.index));
  const finished = new Map<number, ResultRow>();
  const ahead = options.inFlight
    ? askAhead(pending.length, options.inFlight, (k) => options.complete(evalPromptIds(tokenizer, options.chatTemplate, pending[k]!), { maxTokens, stopIds }), now)
    : null;
  try {
    for (let first = 0; first < pending.length; first += batchSize) {
      const group = pending.slice(first, first + batchSize);
      const start = now();
      const asked = ahead ? await ahead.result(first) : null;
      // Asked-ahead prompts were built when they were sent; the others are built here.
      const prompts = () => group.map((problem) => evalPromptIds(tokenizer, options.chatTemplate, problem));
      const results = asked ? [asked.completion] : batchSize > 1
        ? await options.completeBatch!(prompts(), { maxTokens, stopIds })
        : [await options.complete(prompts()[0]!, { maxTokens, stopIds })];
      // A batch shares its wall clock: each problem is charged an equal part (an asked-ahead one, its own request's).
      const seconds = asked ? asked.seconds : (now() - start) / group.length;
      for (const [j, problem] of group.entries()) {
        const result = results[j]!;
        const output = result.text ?? tokenizer.decode(result.ids ?? []);
        const grade = await gradeOutputBounded(bench, output, problem);
        const row: ResultRow = {
          bench,
          index: problem.index,
          id: problem.id,
          problem: problem.problem,
          gold: problem.gold,
          extracted: grade.extracted,
          correct: grade.correct,
          ...(grade.gradeTimeout ? { gradeTimeout: true } : {}),
          tokensGenerated: result.tokens ?? result.ids?.length ?? 0,
          stopReason: result.stopReason,
          seconds: Math.round(seconds * 1000) / 1000,
          ...(problem.choices ? { choices: problem.choices } : {}),
          ...(options.keepOutput === false ? {} : { output }),
          ...(options.ablated === undefined ? {} : { ablated: options.ablated }),
        };
        await writer.append(row);
        generated++;
        finished.set(problem.index, row);
        if (row.correct) correctSoFar++;
        options.onProblem?.({ row, done: done.size - extraRows + finished.size, total: problems.length, correctSoFar: correctSoFar + resumedCorrect });
      }
    }
    for (const problem of problems) rows.push(done.get(problem.index) ?? finished.get(problem.index)!);
  } finally {
    ahead?.stop();
    await writer.close();
  }
  return { rows, summary: summarize(rows), generated };
}

/**
 * Asks `count` things with at most `inFlight` outstanding, starting the next as soon as any settles; `result(k)`
 * waits for the k-th (with its own duration). After `stop`, nothing new starts. A failure is seen when its
 * result is read (and stops the rest from starting), never as an unhandled rejection.
 */
function askAhead<T>(count: number, inFlight: number, ask: (k: number) => Promise<T>, now: () => number) {
  const started: Promise<{ completion: T; seconds: number }>[] = [];
  let next = 0;
  let running = 0;
  let stopped = false;
  const launch = () => {
    while (!stopped && running < inFlight && next < count) {
      const k = next++;
      running++;
      const begun = now();
      const promise = Promise.resolve().then(() => ask(k)).then((completion) => ({ completion, seconds: now() - begun }));
      started[k] = promise;
      promise.then(() => {
        running--;
        launch();
      }, () => {
        running--;
        stopped = true;
      });
    }
  };
  launch();
  return {
    result: (k: number) => started[k] ?? Promise.reject(new Error(`askAhead: problem ${k} was never asked (an earlier one failed)`)),
    stop: () => (stopped = true),
  };
}
