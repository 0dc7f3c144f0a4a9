// `rank1 interpret`: against a fake OpenAI-compatible endpoint that injects 429s with Retry-After, 500s,
// timeouts, non-JSON bodies and off-schema answers (the retries, the error rows, and a second run making zero
// requests); the scores' arithmetic; the bootstrap interval against the closed form; bad inputs; and the whole
// command end to end against `rank1 serve` on the toy base.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { featureKind } from '../src/model/hooks.ts';
import { interpretFeatures } from '../src/interp/autointerp.ts';
import { loadPrompts } from '../src/interp/autointerp-prompts.ts';
import { balancedAccuracy } from '../src/interp/autointerp-scorers.ts';
import { extractJson } from '../src/interp/autointerp-stage.ts';
import { readFeatureFiles } from '../src/interp/features-file.ts';
import { bootstrapShare, categoryDensities, classShares } from '../src/interp/autointerp-figures.ts';
import { CachedChatClient, retryAfterMs } from '../src/interp/llm-client.ts';
import type { FeatureTopExamples } from '../src/interp/topk.ts';
import { startServeProcess } from './helpers/serve-process.ts';

const root = path.resolve(import.meta.dirname, '..');

/** Four synthetic features, each firing on its own marker token, 30 examples apiece. */
function syntheticFeatures(): FeatureTopExamples[] {
  const spec = [['L0_q_proj_pos', 'model.layers.0.self_attn.q_proj', 'AAA'], ['L0_k_proj_pos', 'model.layers.0.self_attn.k_proj', 'BBB'],
    ['L1_up_neuron0_pos', 'model.layers.1.mlp.up_proj', 'CCC'], ['sae_0', 'sae', 'DDD']] as const;
  return spec.map(([feature, hook, marker], f) => ({
    feature, hook, polarity: 'pos', active_count: 100 * (f + 1), mean: 0.5, max: 3,
    histogram: { edges: [0, 1], counts: [1] },
    examples: Array.from({ length: 30 }, (_, i) => ({
      example: f * 1000 + i, position: 2, value: 3 - i * 0.05,
      context_ids: [1, 2, 3, 4], context_tokens: [' the', ' word', ` ${marker}`, ' here'], center: 2,
    })),
  }));
}

/** `hang`: never answer (only the client's timeout ends the request). */
type Behaviour = { status?: number; headers?: Record<string, string>; body?: string; content?: string; hang?: boolean };

/** A scripted chat-completions endpoint: per (stage, feature) a queue of behaviours, then sensible answers. */
function fakeEndpoint(script: Map<string, Behaviour[]>) {
  const calls: { stage: string; feature: string | null }[] = [];
  const server = http.createServer((request, response) => {
    let raw = '';
    request.on('data', (d: Buffer) => (raw += d.toString()));
    request.on('end', () => {
      const body = JSON.parse(raw) as { messages: { role: string; content: string }[] };
      const user = body.messages.at(-1)!.content;
      const stage = user.includes('Describe what the unit responds to') ? 'explain' : user.includes('Propose between') ? 'categories'
        : user.includes('Which one category') ? 'assign' : user.includes('make the unit fire') ? 'detection' : 'fuzzing';
      const feature = /the unit "([^"]+)"/.exec(user)?.[1] ?? /explained as: "fires on (\w+)"/.exec(user)?.[1] ?? null;
      calls.push({ stage, feature });
      const behaviour = script.get(`${stage}:${feature}`)?.shift() ?? {};
      const marker = feature && /^[A-Z]{3}$/.test(feature) ? feature : ({ L0_q_proj_pos: 'AAA', L0_k_proj_pos: 'BBB', L1_up_neuron0_pos: 'CCC', sae_0: 'DDD' } as Record<string, string>)[feature ?? ''] ?? 'ZZZ';
      let content = behaviour.content;
      if (content === undefined) {
        if (stage === 'explain') content = JSON.stringify({ explanation: `fires on ${marker}`, class: marker === 'AAA' ? 0 : marker === 'BBB' ? 1 : 2 });
        else if (stage === 'categories') content = '```json\n' + JSON.stringify({ categories: ['Markers A', 'Markers B', 'Markers C', 'Markers D', 'Other'].map((name) => ({ name, description: `tokens of kind ${name}` })) }) + '\n```';
        else if (stage === 'assign') content = JSON.stringify({ category: `markers ${marker[0]!.toLowerCase()}` }); // case differs on purpose
        else {
          const excerpts = [...user.matchAll(/Excerpt (\d+): (.*)/g)];
          const hit = (text: string) => (stage === 'detection' ? text.includes(marker) : text.includes(`<<${` ${marker}`}>>`));
          content = JSON.stringify({ [stage === 'detection' ? 'activating' : 'correct']: excerpts.filter((m) => hit(m[2]!)).map((m) => Number(m[1])) });
        }
      }
      const send = () => {
        response.writeHead(behaviour.status ?? 200, { 'content-type': 'application/json', ...behaviour.headers });
        response.end(behaviour.body ?? JSON.stringify({ choices: [{ message: { role: 'assistant', content } }], usage: { prompt_tokens: 100, completion_tokens: 10 } }));
      };
      if (!behaviour.hang) send();
    });
  });
  return { server, calls };
}

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`;
}

describe('rank1 interpret against a faulty endpoint', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-interpret-'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('retries 429 (honouring Retry-After), 500, timeouts and non-JSON bodies; retries an off-schema answer once; records error rows; a rerun asks nothing', async () => {
    const script = new Map<string, Behaviour[]>([
      ['explain:L0_q_proj_pos', [{ status: 429, headers: { 'retry-after': '2' }, body: '{"error":{"message":"slow down"}}' }, { status: 500, body: 'oops' }]],
      ['explain:L0_k_proj_pos', [{ content: 'It fires on BBB, I think.' }]], // off-schema once, then fine
      ['explain:L1_up_neuron0_pos', [{ content: '{"explanation": "this explanation is far longer than the ten words that were allowed", "class": 1}' }, { content: 'no json at all' }]],
      ['explain:sae_0', [{ hang: true }, { status: 200, body: 'not json' }]],
    ]);
    const { server, calls } = fakeEndpoint(script);
    const endpoint = await listen(server);
    const waits: number[] = [];
    // The timeout is generous: on a loaded machine an ordinary answer must not run past it (one that did cost a
    // retry more than the four counted below); only the hanging request reaches it.
    const makeClient = () => new CachedChatClient({ endpoint, model: 'fake', cacheDir: path.join(dir, 'cache'), concurrency: 3, retries: 4, timeoutMs: 3000, backoffMs: 10, sleep: async (ms) => { waits.push(ms); }, random: () => 0.5 });
    const features = syntheticFeatures();
    const prompts = await loadPrompts();
    try {
      const client = makeClient();
      const result = await interpretFeatures(features, { client, prompts, out: path.join(dir, 'out'), show: 20, score: ['detection', 'fuzzing'], scoreExamples: 8, seed: 1 });
      expect(waits).toContain(2000); // Retry-After: 2
      expect(client.totals.retries).toBe(4); // 429, 500, timeout, non-JSON body
      const rows = new Map(result.explanations.map((r) => [r.feature, r]));
      expect(rows.get('L0_q_proj_pos')).toMatchObject({ explanation: 'fires on AAA', class: 0, category: 'Markers A', kind: 'adapter' });
      expect(rows.get('L0_k_proj_pos')).toMatchObject({ explanation: 'fires on BBB', class: 1, category: 'Markers B' });
      expect(rows.get('sae_0')).toMatchObject({ explanation: 'fires on DDD', kind: 'sae', category: 'Markers D' });
      const failed = rows.get('L1_up_neuron0_pos')!;
      expect(failed).toMatchObject({ explanation: null, class: null, kind: 'mlp' });
      expect(failed.error).toMatch(/not the JSON asked for/);
      expect(calls.filter((c) => c.stage === 'explain' && c.feature === 'L1_up_neuron0_pos')).toHaveLength(2); // asked once more, then recorded
      expect(result.categories.map((c) => c.name)).toEqual(['Markers A', 'Markers B', 'Markers C', 'Markers D', 'Other']);
      // The fake scorer answers by the marker token, so every explained feature scores 1.
      expect(result.scores).toHaveLength(6);
      for (const s of result.scores) expect(s).toMatchObject({ balanced_accuracy: 1 });
      const detection = result.scores.find((s) => s.method === 'detection')!;
      expect(detection.tp + detection.fn).toBe(8);
      expect(detection.tn + detection.fp).toBe(8);
      const written = (await fs.readFile(path.join(dir, 'out/explanations.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      expect(written).toHaveLength(4);
      expect(JSON.parse(await fs.readFile(path.join(dir, 'out/categories.json'), 'utf8')).categories).toHaveLength(5);

      // Second run, same endpoint: everything comes from the cache and the partial files.
      const before = calls.length;
      const again = await interpretFeatures(features, { client: makeClient(), prompts, out: path.join(dir, 'out'), show: 20, score: ['detection', 'fuzzing'], scoreExamples: 8, seed: 1 });
      expect(calls.length).toBe(before);
      expect(again.explanations).toEqual(result.explanations);
      expect(again.scores).toEqual(result.scores);
      // A fresh output folder sharing the cache: still no request (the cache alone answers).
      await interpretFeatures(features, { client: makeClient(), prompts, out: path.join(dir, 'out2'), show: 20, score: ['detection'], scoreExamples: 8, seed: 1 });
      expect(calls.length).toBe(before);
      // Other settings (fewer examples shown): the partial rows are not reused, the new prompts are asked.
      const explainCalls = () => calls.filter((c) => c.stage === 'explain').length;
      const explainBefore = explainCalls();
      const fewer = await interpretFeatures(features, { client: makeClient(), prompts, out: path.join(dir, 'out'), show: 5, seed: 1 });
      expect(explainCalls()).toBeGreaterThanOrEqual(explainBefore + 4);
      expect(fewer.explanations.filter((r) => r.explanation !== null)).toHaveLength(4); // the scripted failures are used up
    } finally {
      server.close();
    }
  });

  it('gives up on a feature after the retries (an error row, not a crash) and does not retry a 400', async () => {
    const script = new Map<string, Behaviour[]>([
      ['explain:L0_q_proj_pos', Array.from({ length: 10 }, () => ({ status: 503 }))],
      ['explain:L0_k_proj_pos', [{ status: 400, body: '{"error":{"message":"bad request"}}' }]],
    ]);
    const { server, calls } = fakeEndpoint(script);
    const endpoint = await listen(server);
    try {
      const client = new CachedChatClient({ endpoint, model: 'fake', cacheDir: path.join(dir, 'cache-b'), retries: 2, backoffMs: 1, sleep: async () => undefined });
      const result = await interpretFeatures(syntheticFeatures(), { client, prompts: await loadPrompts(), out: path.join(dir, 'out-b') });
      const rows = new Map(result.explanations.map((r) => [r.feature, r]));
      expect(rows.get('L0_q_proj_pos')!.error).toMatch(/answered 503/);
      expect(calls.filter((c) => c.feature === 'L0_q_proj_pos' && c.stage === 'explain')).toHaveLength(3); // 1 + 2 retries
      expect(rows.get('L0_k_proj_pos')!.error).toMatch(/answered 400/);
      expect(calls.filter((c) => c.feature === 'L0_k_proj_pos' && c.stage === 'explain')).toHaveLength(1);
      expect(rows.get('sae_0')!.explanation).toBe('fires on DDD');
      expect(client.totals.failed).toBe(2);
      // The partial file keeps what arrived; a rerun against a healthy endpoint asks only for the two failures.
      const healthy = fakeEndpoint(new Map());
      const healthyEndpoint = await listen(healthy.server);
      try {
        const rerun = await interpretFeatures(syntheticFeatures(), { client: new CachedChatClient({ endpoint: healthyEndpoint, model: 'fake', cacheDir: path.join(dir, 'cache-b') }), prompts: await loadPrompts(), out: path.join(dir, 'out-b') });
        expect(healthy.calls.filter((c) => c.stage === 'explain').map((c) => c.feature).sort()).toEqual(['L0_k_proj_pos', 'L0_q_proj_pos']);
        expect(rerun.explanations.every((r) => r.explanation !== null)).toBe(true);
      } finally {
        healthy.server.close();
      }
    } finally {
      server.close();
    }
  });
});

describe('autointerp pieces', () => {
  it('reads Retry-After as seconds, as an HTTP date, and retry-after-ms', () => {
    expect(retryAfterMs(new Headers({ 'retry-after': '3' }))).toBe(3000);
    expect(retryAfterMs(new Headers({ 'retry-after-ms': '250' }))).toBe(250);
    const now = Date.parse('2026-11-29T10:00:00Z');
    expect(retryAfterMs(new Headers({ 'retry-after': 'Sun, 29 Nov 2026 10:00:05 GMT' }), now)).toBe(5000);
    expect(retryAfterMs(new Headers())).toBeNull();
  });

  it('extracts JSON from fenced or chatty answers; names feature kinds', () => {
    expect(extractJson('Sure!\n```json\n{"a": 1}\n```')).toEqual({ a: 1 });
    expect(extractJson('no braces')).toBeNull();
    expect(featureKind('L12_down_proj_neg')).toBe('adapter');
    expect(featureKind('L3_up_neuron17_pos')).toBe('mlp');
    expect(featureKind('sae_42')).toBe('sae');
  });

  it('balanced accuracy is the mean of the true-positive and true-negative rates', () => {
    const truth = [true, true, true, true, false, false];
    expect(balancedAccuracy(truth, new Set([0, 1, 4]))).toEqual({ balanced_accuracy: (2 / 4 + 1 / 2) / 2, tp: 2, fp: 1, tn: 1, fn: 2 });
    expect(balancedAccuracy([true, true], new Set([0])).balanced_accuracy).toBeNull();
  });

  it('the bootstrap interval of a share matches the normal closed form on a large sample', () => {
    const n = 4000;
    const labels = Array.from({ length: n }, (_, i) => (i % 10 < 3 ? 0 : 1)); // share 0.3
    const { share, low, high } = bootstrapShare(labels, 0, 2000, 5);
    const half = 1.96 * Math.sqrt((0.3 * 0.7) / n);
    expect(share).toBeCloseTo(0.3, 12);
    expect(low).toBeCloseTo(0.3 - half, 2);
    expect(high).toBeCloseTo(0.3 + half, 2);
    expect(Math.abs((high - low) / 2 - half) / half).toBeLessThan(0.1);
  });

  it('class shares per kind and category densities normalise as documented', () => {
    const rows = [
      { feature: 'L0_q_proj_pos', kind: 'adapter' as const, explanation: 'x', class: 0 as const, category: 'A' },
      { feature: 'L0_k_proj_pos', kind: 'adapter' as const, explanation: 'x', class: 2 as const, category: 'B' },
      { feature: 'L1_up_neuron0_pos', kind: 'mlp' as const, explanation: 'x', class: 1 as const, category: 'A' },
    ];
    const shares = classShares(rows, 1);
    expect(shares.filter((s) => s.kind === 'adapter').map((s) => s.share)).toEqual([0.5, 0, 0.5]);
    const densities = categoryDensities(rows, syntheticFeatures());
    const adapter = densities.filter((d) => d.kind === 'adapter');
    // active_count 100 and 200 with |mean| 0.5: masses 50 and 100.
    expect(adapter.find((d) => d.category === 'A')!.density).toBeCloseTo(1 / 3, 12);
    expect(adapter.find((d) => d.category === 'B')!.density).toBeCloseTo(2 / 3, 12);
    expect(densities.find((d) => d.kind === 'mlp')!.density).toBe(1);
  });

  it('names the file and line of a malformed features file, and a prompts folder that is not one', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-features-'));
    try {
      const file = path.join(dir, 'features.jsonl');
      await fs.writeFile(file, `${JSON.stringify(syntheticFeatures()[0])}\n{"feature": "x", "hook": "h"}\n`);
      await expect(readFeatureFiles([file])).rejects.toThrow(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:2: field polarity`));
      await expect(loadPrompts(path.join(dir, 'missing'))).rejects.toThrow(/--prompts .*missing: not a folder/);
      await fs.mkdir(path.join(dir, 'prompts'));
      await fs.writeFile(path.join(dir, 'prompts/explain.jinja'), '{% for x in %}');
      await expect(loadPrompts(path.join(dir, 'prompts'))).rejects.toThrow(/explain.jinja does not parse/);
      await fs.writeFile(path.join(dir, 'prompts/explain.jinja'), 'Custom {{ feature }}');
      expect((await loadPrompts(path.join(dir, 'prompts'))).explain).toBe('Custom {{ feature }}');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('rank1 interpret end to end against rank1 serve (toy base)', () => {
  it('runs the whole path through the local server; a second run makes zero requests', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-interpret-e2e-'));
    const { child: serve, baseURL: endpoint, onStdout } = await startServeProcess(['--model', path.join(root, 'models/toy'), '--backend', 'cpu', '--log']);
    let served = 0;
    // With --log, Fastify writes one JSON line per incoming request to stdout.
    onStdout((text) => { served += (text.match(/"url":"\/v1\/chat\/completions"/g) ?? []).length; });
    try {
      const features = path.join(dir, 'features.jsonl');
      await fs.writeFile(features, syntheticFeatures().map((f) => JSON.stringify(f)).join('\n'));
      // The toy's context is 1024 tokens of a 448-token vocabulary (about a token per character of English):
      // short prompt templates through --prompts, which the run must then use.
      const prompts = path.join(dir, 'prompts');
      await fs.mkdir(prompts);
      const templates: Record<string, string> = {
        system: 'Answer in JSON.', explain: '{{ feature }}:{% for e in examples %} {{ e.token }}{% endfor %}',
        categories: 'Group:{% for i in explanations %} {{ i.explanation }};{% endfor %}', assign: '{{ explanation }}?',
        detection: '{{ explanation }}{% for e in examples %}|{{ e.text }}{% endfor %}', fuzzing: '{{ explanation }}{% for e in examples %}|{{ e.text }}{% endfor %}',
      };
      for (const [name, text] of Object.entries(templates)) await fs.writeFile(path.join(prompts, `${name}.jinja`), text);
      const run = () => spawnSync(process.execPath, [path.join(root, 'bin/rank1.js'), 'interpret', '--features', features, '--out', path.join(dir, 'out'),
        '--endpoint', endpoint, '--model', 'toy', '--prompts', prompts, '--show', '3', '--max-tokens', '700', '--score', 'detection', 'fuzzing', '--score-examples', '2', '--limit', '2'],
      { encoding: 'utf8', timeout: 240_000 });
      const first = run();
      expect(first.status, first.stderr).toBe(0);
      expect(first.stdout).toMatch(/2\/2 features explained \(0 with errors\)/);
      // Structured outputs make even the toy base answer in shape: the explanations are nonsense, the path runs.
      const rows = (await fs.readFile(path.join(dir, 'out/explanations.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { feature: string; explanation: string; class: number; category: string });
      expect(rows.map((r) => r.feature)).toEqual(['L0_q_proj_pos', 'L0_k_proj_pos']);
      const categories = JSON.parse(await fs.readFile(path.join(dir, 'out/categories.json'), 'utf8')) as { categories: { name: string }[] };
      expect(categories.categories.length).toBeGreaterThanOrEqual(2);
      for (const r of rows) {
        expect(typeof r.explanation).toBe('string');
        expect([0, 1, 2]).toContain(r.class);
        expect(categories.categories.map((c) => c.name)).toContain(r.category);
      }
      const scores = (await fs.readFile(path.join(dir, 'out/scores.jsonl'), 'utf8')).trim().split('\n');
      expect(scores).toHaveLength(4);
      const log = (await fs.readFile(path.join(dir, 'out/log.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { stage?: string });
      expect(log.filter((l) => l.stage === 'explain')).toHaveLength(2);
      for (const file of ['figures.json', 'classes.svg', 'category-densities.svg']) await fs.access(path.join(dir, 'out', file));
      const servedAfterFirst = served;
      expect(servedAfterFirst).toBeGreaterThanOrEqual(2 + 1 + 2 + 4);
      const second = run();
      expect(second.status, second.stderr).toBe(0);
      expect(second.stdout).toMatch(/ 0 requests/);
      expect(served).toBe(servedAfterFirst);
    } finally {
      serve.kill('SIGTERM');
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
