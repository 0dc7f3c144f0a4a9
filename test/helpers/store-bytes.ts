// Reading an activation store's tensors as raw bytes, independently of ActivationStore's reader: what the
// sharding tests compare (a merged store = the unsharded one, byte for byte).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readStoreIndex } from '../../src/interp/activation-store.ts';
import { readSafetensorsHeader, readTensorData } from '../../src/model/safetensors.ts';

/** The concatenation, over a store's files in index order, of one tensor's raw bytes. */
export async function storeBytes(store: string, tensor: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const shard of (await readStoreIndex(store)).shards) {
    const file = path.join(store, shard.file);
    const header = await readSafetensorsHeader(file);
    const handle = await fs.open(file, 'r');
    try {
      const data = await readTensorData(handle, header.tensors.get(tensor)!);
      parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    } finally {
      await handle.close();
    }
  }
  return Buffer.concat(parts);
}
