// The training rows of each kind and the tokenized example: the types that reading (data.ts), batching
// (data-batch.ts) and the synthetic set (data-synthetic.ts) share. The loss-mask convention is data.ts's.

export type RowKind = 's1k' | 'text' | 'tokens';

interface RowBase {
  /** Where the row came from, for messages: `file:line` (JSONL), `file: row i` (Parquet), `synthetic row i`. */
  source: string;
}

export interface S1kRow extends RowBase {
  kind: 's1k';
  question: string;
  trajectory: string | readonly string[];
  attempt: string;
}

export interface TextRow extends RowBase {
  kind: 'text';
  text: string;
}

export interface TokensRow extends RowBase {
  kind: 'tokens';
  inputIds: Int32Array;
  lossMask: Uint8Array; // [T], 1 = the token at t is a scored target
}

export type TrainingRow = S1kRow | TextRow | TokensRow;

/** One tokenized sequence: ids [T] and the input-aligned loss mask [T] (input-aligned: see the convention in data.ts). */
export interface TokenizedExample {
  inputIds: Int32Array;
  lossMask: Uint8Array;
}
