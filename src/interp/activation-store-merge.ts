// `rank1 store merge OUT SHARD_DIR…`: the stores of `rank1 extract --shard I/N` (one per shard) joined into
// the store an unsharded extraction writes. The shards took contiguous rows (io/shard.ts), so the merged store
// lists shard 0's files, then shard 1's, …: its examples are in the unsharded order, and its `acts` read in
// order are the unsharded bytes (each example's activations come from its own forward, wherever it ran).
//
// The files are hard-linked into OUT (copied where a link cannot be made, e.g. across file systems): a link
// costs no space and no time at any size, and is safe because a store never rewrites a shard file in place
// (a shard is written to a temporary name and renamed; a resumed run only adds new files). A reference to the
// shard folders instead would leave OUT broken when they are cleaned up, and index.json's files are names
// inside the store by design (a Python reader opens them next to index.json).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.ts';
import { orderShards, ShardError } from '../io/shard.ts';
import { ActivationStoreError, STORE_INDEX_FILE, readStoreIndex, shardFileName, type StoreIndex, type StoreShardInfo } from './activation-store.ts';

export interface StoreMergeResult {
  index: StoreIndex;
  /** Files hard-linked and copied. */
  linked: number;
  copied: number;
}

/** The fields that make two stores parts of one extraction; a merge refuses parts that differ in any. */
const IDENTITY: readonly { field: keyof StoreIndex; flag: string; same: (a: StoreIndex, b: StoreIndex) => boolean }[] = [
  { field: 'model', flag: '--model', same: (a, b) => path.resolve(a.model) === path.resolve(b.model) },
  { field: 'adapter', flag: '--adapter', same: (a, b) => path.resolve(a.adapter) === path.resolve(b.adapter) },
  { field: 'data', flag: '--data', same: (a, b) => path.resolve(a.data) === path.resolve(b.data) },
  { field: 'rendering', flag: '--format', same: (a, b) => a.rendering === b.rendering },
  { field: 'max_tokens', flag: '--max-tokens', same: (a, b) => a.max_tokens === b.max_tokens },
  { field: 'hooks', flag: 'adapter hooks', same: (a, b) => a.hooks.join('\n') === b.hooks.join('\n') },
  { field: 'mlp_neurons', flag: '--mlp-neurons', same: (a, b) => a.mlp_neurons.join('\n') === b.mlp_neurons.join('\n') },
];

async function linkOrCopy(from: string, to: string): Promise<'linked' | 'copied'> {
  try {
    await fs.link(from, to);
    return 'linked';
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EMLINK') throw error;
    await fs.copyFile(from, to);
    return 'copied';
  }
}

/**
 * Merges the stores in `shardDirs` (any order) into a new store at `out` (absent or empty). Refuses stores of
 * another model, adapter, data, rendering, truncation, hooks or MLP neurons (naming the field and both
 * stores), an unsharded or partial store, and shards that leave a gap or overlap (naming the shard).
 */
export async function mergeStores(out: string, shardDirs: readonly string[]): Promise<StoreMergeResult> {
  const parts = await Promise.all(shardDirs.map(async (dir) => ({ dir, index: await readStoreIndex(dir) })));
  const first = parts[0];
  if (!first) throw new ActivationStoreError('store merge needs at least one shard store');
  for (const part of parts.slice(1)) {
    for (const { field, flag, same } of IDENTITY) {
      if (!same(first.index, part.index)) {
        const shown = (v: unknown) => (Array.isArray(v) ? `${v.length} names` : JSON.stringify(v));
        throw new ActivationStoreError(`${part.dir} is not a shard of the same extraction as ${first.dir}: its ${field} (${flag}) is ${shown(part.index[field])}, not ${shown(first.index[field])}`);
      }
    }
  }
  let ordered: { dir: string; index: StoreIndex }[];
  try {
    ordered = orderShards(parts.map((p) => ({ name: p.dir, record: p.index.shard, value: p })));
  } catch (error) {
    if (error instanceof ShardError) throw new ActivationStoreError(`store merge: ${error.message}`);
    throw error;
  }
  const partial = ordered.find((p) => !p.index.complete);
  if (partial) throw new ActivationStoreError(`${partial.dir} (shard ${partial.index.shard!.index}/${partial.index.shard!.count}) is partial (rows done up to ${partial.index.rows_done} of ${partial.index.shard!.from}..${partial.index.shard!.to - 1}): rerun its extraction to finish it, then merge`);

  await fs.mkdir(out, { recursive: true });
  const present = (await fs.readdir(out)).filter((f) => !f.includes('.tmp-'));
  if (present.length > 0) throw new ActivationStoreError(`${out} is not empty (found ${present.slice(0, 3).join(', ')}): merge into a new folder`);
  const shards: StoreShardInfo[] = [];
  let linked = 0;
  let copied = 0;
  for (const part of ordered) {
    for (const info of part.index.shards) {
      const file = shardFileName(shards.length);
      if ((await linkOrCopy(path.join(part.dir, info.file), path.join(out, file))) === 'linked') linked++;
      else copied++;
      shards.push({ file, examples: info.examples, tokens: info.tokens });
    }
  }
  // The store reads its own tokens back (topk's contexts): the first shard's tokenizer, where it has one.
  for (const part of ordered) {
    const tokenizer = path.join(part.dir, 'tokenizer.json');
    if (await fs.access(tokenizer).then(() => true, () => false)) {
      await fs.copyFile(tokenizer, path.join(out, 'tokenizer.json'));
      break;
    }
  }
  const { shard: _shard, ...identity } = first.index;
  const index: StoreIndex = {
    ...identity,
    examples: shards.reduce((n, s) => n + s.examples, 0),
    tokens: shards.reduce((n, s) => n + s.tokens, 0),
    shards,
    rows_done: first.index.shard!.rows,
    complete: true,
  };
  const text = `${JSON.stringify(index, null, 2)}\n`;
  await writeFileAtomic(path.join(out, STORE_INDEX_FILE), async (handle) => {
    await handle.writeFile(text, 'utf8');
  });
  return { index, linked, copied };
}
