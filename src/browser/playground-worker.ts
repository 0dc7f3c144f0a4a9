// The playground's engine thread (a dedicated Web Worker, so generation never blocks the page): it builds the
// model from the files the page posts, on WebGPU where the worker has it and the CPU backend otherwise, and
// streams each generated token with every adapter's activation.
//   page → worker: {type: 'load', files, backend: 'auto' | 'cpu' | 'webgpu'}, {type: 'generate', request}
//   worker → page: {type: 'loaded', backend, hooks}, {type: 'token', id, text, acts}, {type: 'done'}, {type: 'error', message}
import { cpuBackend, modelFromFiles, webGpuBackend, type ModelFiles } from './engine.ts';
import { PlaygroundSession, type PlaygroundRequest } from './playground-session.ts';
import type { Backend } from '../kernels/backend.ts';

type Message = { type: 'load'; files: ModelFiles; backend: 'auto' | 'cpu' | 'webgpu' } | { type: 'generate'; request: PlaygroundRequest };

const scope = globalThis as unknown as { postMessage: (message: unknown, transfer?: Transferable[]) => void; onmessage: ((event: MessageEvent<Message>) => void) | null };
let session: PlaygroundSession | null = null;
let queue = Promise.resolve();

/** WebGPU when asked, or under 'auto' when the adapter is not a software one (SwiftShader is slower than the CPU). */
async function chooseBackend(asked: 'auto' | 'cpu' | 'webgpu'): Promise<Backend> {
  if (asked === 'cpu') return cpuBackend();
  const gpu = await webGpuBackend();
  if ('backend' in gpu) {
    const software = /swiftshader|llvmpipe|lavapipe|fallback/i.test(gpu.backend.description);
    if (asked === 'webgpu' || !software) return gpu.backend;
    gpu.backend.destroy();
  } else if (asked === 'webgpu') throw new Error(gpu.reason);
  return cpuBackend();
}

async function handle(message: Message): Promise<void> {
  if (message.type === 'load') {
    session?.model.dispose();
    const backend = await chooseBackend(message.backend);
    const loaded = await modelFromFiles(message.files, backend, 'playground');
    session = new PlaygroundSession(loaded.model, loaded.tokenizer, loaded.chatTemplate);
    scope.postMessage({ type: 'loaded', backend: backend.description, hooks: session.hooks, layers: loaded.model.dims.layers });
    return;
  }
  if (!session) throw new Error('no model loaded');
  for await (const token of session.generate(message.request)) {
    scope.postMessage({ type: 'token', id: token.id, text: token.text, acts: token.acts }, [token.acts.buffer]);
  }
  scope.postMessage({ type: 'done' });
}

scope.onmessage = (event) => {
  queue = queue.then(() => handle(event.data)).catch((error: Error) => scope.postMessage({ type: 'error', message: error.message }));
};
