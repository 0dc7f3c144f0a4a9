// The playground's channel between the page (src/dashboard/app/playground.tsx) and the engine's Web Worker
// (./playground-worker.ts): every message either side sends, as one tagged union per direction, and the
// model-files shape that the dashboard embeds, the page posts and the engine builds a model from. Both ends
// import this module, so a message changed here is changed for both (vLLM's protocol.py, for a worker).
//   page → worker: load (the files, the backend asked for), then generate (one request at a time)
//   worker → page: loaded, then per request: token… and done, or error (for either message)
import type { PlaygroundRequest } from './playground-session.ts';

/**
 * A model folder's files as parsed JSON and raw bytes, and optionally a PEFT adapter folder's two files.
 * `Bytes` is Uint8Array where the engine reads them, base64 text where a dashboard embeds them in a script.
 */
export interface ModelFiles<Bytes = Uint8Array> {
  config: unknown;
  weights: Bytes;
  tokenizer: unknown;
  tokenizerConfig?: unknown;
  generationConfig?: unknown;
  chatTemplate?: string;
  adapterConfig?: unknown;
  adapterWeights?: Bytes;
}

/** What a dashboard embeds in data/model.js (`window.RANK1_MODEL_FILES`): the files, weights in base64. */
export type EmbeddedModelFiles = ModelFiles<string> & {
  /** The question the playground opens with. */
  question?: string;
};

/** The backend the page asks for (`?backend=` in its URL); anything else reads as 'auto'. */
export type BackendRequest = 'auto' | 'cpu' | 'webgpu';

export function parseBackendRequest(value: string | null): BackendRequest {
  return value === 'cpu' || value === 'webgpu' ? value : 'auto';
}

export type PageToWorker =
  | { type: 'load'; files: ModelFiles; backend: BackendRequest }
  | { type: 'generate'; request: PlaygroundRequest };

export type WorkerToPage =
  /** The model is built: on which backend, and its adapter hook names in paper order (the strip's rows). */
  | { type: 'loaded'; backend: string; hooks: string[]; layers: number }
  /** One generated token and every adapter's A·x at the position that produced it (paper order). */
  | { type: 'token'; id: number; text: string; acts: Float32Array }
  | { type: 'done' }
  | { type: 'error'; message: string };

// ---- the page's end -------------------------------------------------------------------------------------

/** Posts to the worker, moving the `transfer` buffers rather than copying them. */
export function postToWorker(worker: Worker, message: PageToWorker, transfer: Transferable[] = []): void {
  worker.postMessage(message, transfer);
}

/** Hands every message from the worker to `handle`. */
export function onWorkerMessage(worker: Worker, handle: (message: WorkerToPage) => void): void {
  worker.onmessage = (event: MessageEvent<WorkerToPage>) => handle(event.data);
}

// ---- the worker's end (globalThis is the worker's scope there) ------------------------------------------

/** Posts to the page, moving the `transfer` buffers rather than copying them. */
export function postToPage(message: WorkerToPage, transfer: Transferable[] = []): void {
  globalThis.postMessage(message, { transfer });
}

/** Hands every message from the page to `handle`. */
export function onPageMessage(handle: (message: PageToWorker) => void): void {
  globalThis.addEventListener('message', (event: MessageEvent<PageToWorker>) => handle(event.data));
}
