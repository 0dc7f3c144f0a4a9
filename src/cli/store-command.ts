// `rank1 store merge OUT SHARD_DIR…`: the activation stores of a sharded `rank1 extract` joined into one
// (interp/activation-store-merge.ts says how and why the files are hard-linked).
import { mergeStores } from '../interp/activation-store-merge.ts';
import { note } from './io.ts';

export async function storeMergeCommand(out: string, shardDirs: string[]): Promise<void> {
  const { index, linked, copied } = await mergeStores(out, shardDirs);
  note(`merged ${shardDirs.length} shard store(s) into ${out}: ${index.examples} examples, ${index.tokens} tokens, ${index.shards.length} file(s) `
    + `(${linked} hard-linked${copied ? `, ${copied} copied` : ''})`);
}
