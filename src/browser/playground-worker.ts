// The playground's engine thread (a dedicated Web Worker, so generation never blocks the page): it builds the
// model from the files the page posts, on WebGPU where the worker has it and the CPU backend otherwise, and
// streams each generated token with every adapter's activation. The messages are ./protocol.ts's.
import { cpuBackend, modelFromFiles, webGpuBackend } from './engine.ts';
import { PlaygroundSession } from './playground-session.ts';
import { onPageMessage, postToPage, type BackendRequest, type PageToWorker } from './protocol.ts';
import type { Backend } from '../kernels/backend.ts';
import { decideWebGpu } from '../kernels/webgpu/adapter-kind.ts';

let session: PlaygroundSession | null = null;
let queue = Promise.resolve();

/** WebGPU when asked, or under 'auto' when the adapter is a real GPU (a software one is slower than the CPU). */
async function chooseBackend(asked: BackendRequest): Promise<Backend> {
  if (asked === 'cpu') return cpuBackend();
  const gpu = await webGpuBackend();
  if (!('backend' in gpu)) {
    if (asked === 'webgpu') throw new Error(gpu.reason);
    return cpuBackend();
  }
  const verdict = decideWebGpu(asked, gpu.backend.runtime.acquired.adapterInfo, gpu.backend.description, 'the CPU backend');
  if (verdict.use === 'webgpu') return gpu.backend;
  gpu.backend.destroy();
  return cpuBackend();
}

async function handle(message: PageToWorker): Promise<void> {
  if (message.type === 'load') {
    session?.model.dispose();
    const backend = await chooseBackend(message.backend);
    const loaded = await modelFromFiles(message.files, backend, 'playground');
    session = new PlaygroundSession(loaded.model, loaded.tokenizer, loaded.chatTemplate);
    postToPage({ type: 'loaded', backend: backend.description, hooks: session.hooks, layers: loaded.model.dims.layers });
    return;
  }
  if (!session) throw new Error('no model loaded');
  for await (const token of session.generate(message.request)) {
    postToPage({ type: 'token', id: token.id, text: token.text, acts: token.acts }, [token.acts.buffer]);
  }
  postToPage({ type: 'done' });
}

onPageMessage((message) => {
  queue = queue.then(() => handle(message)).catch((error: Error) => postToPage({ type: 'error', message: error.message }));
});
