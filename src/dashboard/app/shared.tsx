// What the dashboard's pages share: loading feature chunks (script tags, so file:// works), number format,
// and an example's tokens coloured by the feature's value.
import type { DashboardGlobals, ExampleDetail, FeatureDetail } from '../types.ts';

const globals = window as unknown as Window & DashboardGlobals;

const chunkCache = new Map<number, Promise<Map<string, FeatureDetail>>>();
const chunkWaiters = new Map<number, (features: FeatureDetail[]) => void>();
globals.rank1DashboardChunk = (chunk, features) => chunkWaiters.get(chunk)?.(features);

/** Loads data/features-NNN.js once (a script tag, which works from file://). */
export function loadChunk(chunk: number): Promise<Map<string, FeatureDetail>> {
  let pending = chunkCache.get(chunk);
  if (!pending) {
    pending = new Promise((resolve, reject) => {
      chunkWaiters.set(chunk, (features) => resolve(new Map(features.map((f) => [f.name, f]))));
      const tag = document.createElement('script');
      tag.src = `data/features-${String(chunk).padStart(3, '0')}.js`;
      tag.onerror = () => reject(new Error(`could not load ${tag.src}`));
      document.head.appendChild(tag);
    });
    chunkCache.set(chunk, pending);
  }
  return pending;
}

export const format = (value: number | null, digits = 3) => (value === null ? '—' : Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-3) ? value.toExponential(2) : value.toFixed(digits));

/** Tokens coloured by this feature's value: one hue per sign, intensity by |value| over the feature's largest. */
export function Example({ example, scale }: { example: ExampleDetail; scale: number }) {
  return (
    <div class="example" data-testid="example">
      <span class="value">{format(example.value)} · ex {example.example} pos {example.position}</span>
      {example.tokens.map((token, i) => {
        const value = example.values?.[i] ?? (i === example.center ? example.value : 0);
        const alpha = Math.min(1, Math.abs(value) / scale);
        const colour = value >= 0 ? 'var(--pos)' : 'var(--neg)';
        return (
          <span class={`tok${i === example.center ? ' center' : ''}`} title={`${JSON.stringify(token)}: ${format(value, 4)}`} data-value={value}
            style={alpha > 0 ? { background: `rgba(${colour}, ${alpha.toFixed(3)})` } : undefined}>{token}</span>
        );
      })}
    </div>
  );
}

