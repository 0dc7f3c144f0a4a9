import type { Storage } from '../backend.ts';
import { CpuStorage, elementReader, f32Of, i32Of } from './storage.ts';

function checkId(id: number, vocab: number, position: number): void {
  if (!(id >= 0 && id < vocab)) {
    throw new Error(`embedding: token id ${id} at position ${position} is outside the vocabulary [0, ${vocab})`);
  }
}

// embedding: table [V, H] (any float dtype, read packed), ids [N] -> [N, H] f32.
export function embedding(table: Storage, ids: Storage, vocab: number, hidden: number): Storage {
  const read = elementReader(table, 'embedding');
  const tokens = i32Of(ids, 'embedding');
  const out = new Float32Array(tokens.length * hidden);
  for (let n = 0; n < tokens.length; n++) {
    const id = tokens[n]!;
    checkId(id, vocab, n);
    for (let h = 0; h < hidden; h++) out[n * hidden + h] = read(id * hidden + h);
  }
  return new CpuStorage('f32', out);
}

// embeddingBackward: dy [N, H], ids [N] -> dtable [V, H], scatter-add.
export function embeddingBackward(dy: Storage, ids: Storage, vocab: number, hidden: number): Storage {
  const grad = f32Of(dy, 'embeddingBackward');
  const tokens = i32Of(ids, 'embeddingBackward');
  const out = new Float32Array(vocab * hidden);
  for (let n = 0; n < tokens.length; n++) {
    const id = tokens[n]!;
    checkId(id, vocab, n);
    for (let h = 0; h < hidden; h++) out[id * hidden + h]! += grad[n * hidden + h]!;
  }
  return new CpuStorage('f32', out);
}
