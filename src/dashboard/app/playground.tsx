// The playground page: rank1's own engine running in this browser (a Web Worker: WebGPU where the browser
// has it, the CPU backend otherwise), the shipped model and adapter embedded in the site, generation with the
// think format, and every adapter's activation arising token by token — a 7 × L strip per token. Click a cell
// to see that adapter's value and a link to its top examples; ablate or steer it for the next generation.
import { render } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { featureName, polarityOf } from '../../model/hooks.ts';
import { onWorkerMessage, parseBackendRequest, postToWorker, type EmbeddedModelFiles } from '../../browser/protocol.ts';
import type { DashboardGlobals, FeatureDetail } from '../types.ts';
import { Example, loadChunk } from './shared.tsx';

const globals = window as unknown as Window & DashboardGlobals;

/** The top examples of a dashboard feature, loaded from its data chunk (the site's own features). */
function TopExamples({ name }: { name: string }) {
  const summary = globals.RANK1_DASHBOARD_INDEX?.features.find((f) => f.name === name);
  const [detail, setDetail] = useState<FeatureDetail | null>(null);
  useEffect(() => {
    setDetail(null);
    if (summary) void loadChunk(summary.chunk).then((chunk) => setDetail(chunk.get(name) ?? null));
  }, [name]);
  if (!summary) return <p class="meta">No feature {name} in this dashboard.</p>;
  if (!detail) return <p class="loading">Loading its top examples…</p>;
  const shown = detail.examples.slice(0, 3);
  const scale = Math.max(1e-12, ...shown.map((e) => Math.max(Math.abs(e.value), ...(e.values ?? []).map(Math.abs))));
  return <div data-testid="top-examples">{shown.map((e) => <Example example={e} scale={scale} />)}</div>;
}

interface Token { id: number; text: string; acts: Float32Array }
interface Selection { token: number; hook: number }

const bytesOf = (base64: string): Uint8Array => Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));

/** L{layer}_{proj}_{pos|neg}: the dashboard's feature for this adapter and sign. */
const featureOf = (hook: string, value: number): string => featureName(hook, polarityOf(value));

function Strip({ tokens, hooks, selected, ablated, onSelect }: { tokens: Token[]; hooks: string[]; selected: Selection | null; ablated: ReadonlySet<string>; onSelect: (s: Selection) => void }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const cell = { w: 12, h: hooks.length > 100 ? 2 : 8 };
  const scale = useMemo(() => Math.max(1e-6, ...tokens.flatMap((t) => Array.from(t.acts, Math.abs))), [tokens]);
  useEffect(() => {
    const ctx = canvas.current?.getContext('2d');
    if (!ctx) return;
    ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
    tokens.forEach((token, x) => {
      token.acts.forEach((value, y) => {
        const alpha = Math.min(1, Math.abs(value) / scale);
        ctx.fillStyle = value >= 0 ? `rgba(234, 110, 20, ${alpha})` : `rgba(30, 110, 230, ${alpha})`;
        ctx.fillRect(x * cell.w, y * cell.h, cell.w - 1, cell.h - 1);
      });
    });
    hooks.forEach((hook, y) => {
      if (!ablated.has(hook)) return;
      ctx.fillStyle = 'rgba(0, 0, 0, 0.15)';
      ctx.fillRect(0, y * cell.h, tokens.length * cell.w, cell.h - 1);
    });
    if (selected) {
      ctx.strokeStyle = '#000';
      ctx.strokeRect(selected.token * cell.w - 0.5, selected.hook * cell.h - 0.5, cell.w, cell.h);
    }
  }, [tokens, hooks, selected, ablated, scale]);
  return (
    <canvas ref={canvas} data-testid="strip" width={Math.max(1, tokens.length) * cell.w} height={hooks.length * cell.h}
      title="rows: adapters in paper order (7·layer + j); columns: generated tokens; click a cell"
      onClick={(e) => {
        const box = (e.target as HTMLCanvasElement).getBoundingClientRect();
        const token = Math.floor((e.clientX - box.left) / cell.w);
        const hook = Math.floor((e.clientY - box.top) / cell.h);
        if (token >= 0 && token < tokens.length && hook >= 0 && hook < hooks.length) onSelect({ token, hook });
      }} />
  );
}

function Playground({ files, workerSource }: { files: EmbeddedModelFiles; workerSource: string }) {
  const worker = useMemo(() => new Worker(URL.createObjectURL(new Blob([workerSource], { type: 'text/javascript' }))), [workerSource]);
  const [status, setStatus] = useState('loading the model…');
  const [backend, setBackend] = useState('');
  const [hooks, setHooks] = useState<string[]>([]);
  const [question, setQuestion] = useState(files.question ?? 'Start with 4, then (1) *9, (2) +5, (3) *7. What is the last digit of the result?');
  const [maxTokens, setMaxTokens] = useState(160);
  const [tokens, setTokens] = useState<Token[]>([]);
  const [running, setRunning] = useState(false);
  const [selected, setSelected] = useState<Selection | null>(null);
  const [ablated, setAblated] = useState<Set<string>>(new Set());
  const [steered, setSteered] = useState<Record<string, number>>({});
  const [steerValue, setSteerValue] = useState(2);
  useEffect(() => {
    const received: Token[] = [];
    onWorkerMessage(worker, (message) => {
      switch (message.type) {
        case 'loaded':
          setBackend(message.backend);
          setHooks(message.hooks);
          setStatus('ready');
          break;
        case 'token':
          received.push({ id: message.id, text: message.text, acts: message.acts });
          setTokens([...received]);
          break;
        case 'done':
          setRunning(false);
          setStatus(`done: ${received.length} tokens`);
          received.length = 0;
          break;
        case 'error':
          setRunning(false);
          setStatus(`error: ${message.message}`);
          received.length = 0;
          break;
      }
    });
    const asked = parseBackendRequest(new URLSearchParams(location.search).get('backend'));
    const weights = bytesOf(files.weights);
    const adapterWeights = files.adapterWeights ? bytesOf(files.adapterWeights) : undefined;
    postToWorker(worker, { type: 'load', backend: asked, files: { ...files, weights, adapterWeights } }, [weights.buffer, ...(adapterWeights ? [adapterWeights.buffer] : [])]);
    return () => worker.terminate();
  }, [worker]);
  const generate = () => {
    setTokens([]);
    setSelected(null);
    setRunning(true);
    setStatus('generating…');
    postToWorker(worker, { type: 'generate', request: { question, maxTokens, ablate: [...ablated], steer: steered, think: true } });
  };
  const hook = selected ? hooks[selected.hook] ?? null : null;
  const value = selected ? tokens[selected.token]?.acts[selected.hook] ?? 0 : 0;
  const toggle = (name: string) => {
    const next = new Set(ablated);
    if (next.has(name)) next.delete(name);
    else next.add(name);
    setAblated(next);
  };
  return (
    <>
      <header>
        <h1>rank1 playground</h1>
        <a href="index.html#/">features</a>
        <a href="index.html#/overview">overview</a>
        <a href="playground.html" class="active">playground</a>
      </header>
      <main>
        <p class="meta" data-testid="status">{status}{backend ? ` · ${backend}` : ''}{hooks.length ? ` · ${hooks.length} adapters` : ''}</p>
        <div class="controls">
          <input type="text" name="question" size={80} value={question} onInput={(e) => setQuestion((e.target as HTMLInputElement).value)} />
          <label>max tokens <input type="number" name="max-tokens" min={1} max={1000} value={maxTokens} onInput={(e) => setMaxTokens(Number((e.target as HTMLInputElement).value))} /></label>
          <button data-testid="generate" disabled={running || hooks.length === 0 && status !== 'ready'} onClick={generate}>generate</button>
        </div>
        {(ablated.size > 0 || Object.keys(steered).length > 0) && (
          <p class="meta" data-testid="interventions">next generation: {[...ablated].map((h) => `${h} zeroed`).concat(Object.entries(steered).map(([h, v]) => `${h} ${v >= 0 ? '+' : ''}${v}`)).join(', ')}{' '}
            <button onClick={() => { setAblated(new Set()); setSteered({}); }}>clear</button></p>
        )}
        <div class="panel example" data-testid="output">
          {tokens.map((t, i) => <span class={`tok${selected?.token === i ? ' center' : ''}`} onClick={() => setSelected({ token: i, hook: selected?.hook ?? 0 })}>{t.text}</span>)}
        </div>
        {hooks.length > 0 && tokens.length > 0 && (
          <div class="panel">
            <h3>Adapter activations (A·x) per generated token</h3>
            <div style={{ overflowX: 'auto' }}><Strip tokens={tokens} hooks={hooks} selected={selected} ablated={ablated} onSelect={setSelected} /></div>
          </div>
        )}
        {selected && hook && (
          <div class="panel" data-testid="selected">
            <strong>{hook}</strong> at token {selected.token} ({JSON.stringify(tokens[selected.token]?.text ?? '')}): A·x = {value.toFixed(4)} ·{' '}
            <a href={`index.html#/feature/${encodeURIComponent(featureOf(hook, value))}`}>top examples of {featureOf(hook, value)}</a>
            <TopExamples name={featureOf(hook, value)} />
            <div class="controls">
              <button data-testid="ablate" onClick={() => toggle(hook)}>{ablated.has(hook) ? 'restore' : 'zero-ablate'} this adapter</button>
              <label>steer by <input type="number" step="0.5" value={steerValue} onInput={(e) => setSteerValue(Number((e.target as HTMLInputElement).value))} /></label>
              <button onClick={() => setSteered({ ...steered, [hook]: steerValue })}>steer</button>
            </div>
          </div>
        )}
      </main>
    </>
  );
}

const root = document.getElementById('app')!;
root.textContent = '';
if (globals.RANK1_MODEL_FILES && globals.RANK1_WORKER_SOURCE) render(<Playground files={globals.RANK1_MODEL_FILES} workerSource={globals.RANK1_WORKER_SOURCE} />, root);
else root.innerHTML = '<p class="error">This dashboard was built without a model: rank1 dashboard --model DIR [--adapter DIR] adds the playground.</p>';
