// What every autointerpretation stage shares: asking the LLM for JSON of a given shape (one retry, then an
// error row, never a crash), and running a stage resumably — one question per item, each answer appended to
// DIR/<stage>.partial.jsonl as it arrives, so a killed run loses nothing and a rerun with the same settings
// skips what is there (and the response cache answers the rest without a request).
import type { z } from 'zod';
import { appendJsonl, readJsonl } from '../io/jsonl.ts';
import type { CachedChatClient, ChatMessageIn } from './llm-client.ts';
import type { InterpretProgress, InterpretStage } from './autointerp-types.ts';

/** The first JSON object in a model's answer (code fences and prose around it tolerated), or null. */
export function extractJson(text: string): unknown {
  const start = text.indexOf('{');
  const end = text.lastIndexOf('}');
  if (start < 0 || end <= start) return null;
  try {
    return JSON.parse(text.slice(start, end + 1));
  } catch {
    return null;
  }
}

/** A JSON-schema object whose every property is required and no other allowed (structured outputs' strict form). */
export const objectSchema = (properties: Record<string, unknown>) => ({ type: 'object', properties, required: Object.keys(properties), additionalProperties: false });

/** The shape an answer must have: checked with `answer`, and sent as response_format `name`/`schema`. */
export interface AnswerShape<T> {
  answer: z.ZodType<T>;
  name: string;
  schema: object;
}

export type Asked<T> = { value: T } | { error: string };

export interface AskerOptions {
  client: CachedChatClient;
  /** The system message every question starts with. */
  system: ChatMessageIn;
  /** Send each answer's JSON schema as `response_format` (structured outputs). */
  structuredOutputs: boolean;
  /** One line per call, for the run log. */
  log: (entry: Record<string, unknown>) => void;
}

/**
 * Asks `user` after the system message and parses the answer with `shape`; an answer that is not that JSON
 * is asked once more (attempt 1, a different cache key), then reported as an error. Transport failures
 * (after the client's retries) are errors too.
 */
export async function askJson<T>(asker: AskerOptions, user: string, shape: AnswerShape<T>, what: Record<string, unknown>): Promise<Asked<T>> {
  const { client, log } = asker;
  const messages: ChatMessageIn[] = [asker.system, { role: 'user', content: user }];
  // The key order of response_format is part of the response cache key: keep it.
  const responseFormat = asker.structuredOutputs
    ? { type: 'json_schema', json_schema: { name: shape.name, strict: true, schema: { ...shape.schema, additionalProperties: false } } }
    : undefined;
  let problem = '';
  for (let attempt = 0; attempt < 2; attempt++) {
    const started = Date.now();
    try {
      const answer = await client.complete(messages, attempt, responseFormat);
      const parsed = shape.answer.safeParse(extractJson(answer.text));
      log({ ...what, attempt, cached: answer.cached, requests: answer.requests, usage: answer.usage, ms: Date.now() - started, ok: parsed.success });
      if (parsed.success) return { value: parsed.data };
      problem = `the answer is not the JSON asked for (${parsed.error.issues[0]?.message ?? 'no JSON object'}): ${answer.text.slice(0, 200)}`;
    } catch (error) {
      log({ ...what, attempt, ms: Date.now() - started, ok: false, error: (error as Error).message });
      return { error: (error as Error).message };
    }
  }
  return { error: problem };
}

/** A stage's reported progress: items answered, items failed, of all. */
export type ProgressReporter = (progress: InterpretProgress) => void;

/** The stage, one item at a time. */
export interface ResumableStage<Item, Row extends { feature: string; error?: string }> {
  stage: InterpretStage;
  /** The partial file: one row per answer (errors too), each tagged with the settings hash (its key `run`). */
  file: string;
  /**
   * A hash of the settings the answers depend on (prompts, model, sampling, shown examples, …): rows of a
   * run with other settings are not reused (the cache still answers what it can).
   */
  settingsHash: string;
  items: readonly Item[];
  feature: (item: Item) => string;
  /** A row from the partial file, as this run uses it, or null to ask again (default: the row as read). */
  reuse?: (row: Row) => Row | null;
  /** Asks for one item; a row with `error` counts as failed (it is appended, and asked again next run). */
  ask: (item: Item) => Promise<Row>;
}

/** Rows of the partial file written with the same settings hash; error rows and lines cut by a kill are left out (asked again). */
export async function readPartial<Row extends { feature: string }>(file: string, settingsHash: string): Promise<Map<string, Row>> {
  const rows = new Map<string, Row>();
  for await (const { value } of readJsonl(file, { missingOk: true, skipBadLines: true })) {
    const { run: written, ...row } = value as Row & { error?: string; run?: string };
    if (written === settingsHash && !row.error) rows.set(row.feature, row as unknown as Row);
  }
  return rows;
}

/** Runs a stage over all its items at once (the client bounds the requests in flight); its rows in item order. */
export async function runResumableStage<Item, Row extends { feature: string; error?: string }>(
  stage: ResumableStage<Item, Row>, onProgress: ProgressReporter = () => undefined,
): Promise<Row[]> {
  const previous = await readPartial<Row>(stage.file, stage.settingsHash);
  const total = stage.items.length;
  let done = 0;
  let failed = 0;
  const report = () => onProgress({ stage: stage.stage, done, total, failed });
  report();
  return Promise.all(stage.items.map(async (item) => {
    const before = previous.get(stage.feature(item));
    const reused = before && (stage.reuse ? stage.reuse(before) : before);
    if (reused) {
      done++;
      report();
      return reused;
    }
    const row = await stage.ask(item);
    await appendJsonl(stage.file, { ...row, run: stage.settingsHash });
    if (row.error === undefined) done++;
    else failed++;
    report();
    return row;
  }));
}

/** A seed for one use (`name`) of the run's seed, so each feature's draw is independent of the others. */
export function seedOf(seed: number, name: string): number {
  let h = seed >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 2654435761) >>> 0;
  return h;
}
