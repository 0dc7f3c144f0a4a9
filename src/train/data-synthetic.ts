// A tiny pre-tokenized dataset for tests and the demo: sequences over a vocabulary of at most 64 ids (the
// tiny test models' size) in which each token is a fixed function of the one before it, except with
// probability `noise`. A model that learns the successor table drives the loss towards the noise's entropy.
// Each row opens with a random unscored "prompt"; the rest is scored. Id 0 is never used: it is the padding.
import { Random } from '../tensor/random.ts';
import type { TokensRow } from './data-rows.ts';

/** The id synthetic rows leave free for padding. */
export const SYNTHETIC_PAD_ID = 0;

export interface SyntheticOptions {
  /** Ids are drawn from [1, vocabSize); at most 64. Default 32. */
  vocabSize?: number;
  minLength?: number; // default 8
  maxLength?: number; // default 24
  /** Leading tokens that are random and unscored. Default 3. */
  promptLength?: number;
  /** Probability that a token is random instead of the successor of the previous one. Default 0.1. */
  noise?: number;
}

/** The deterministic next token: an affine map on [1, vocabSize), a permutation whenever gcd(5, vocabSize − 1) = 1. */
export function syntheticSuccessor(token: number, vocabSize = 32): number {
  return 1 + ((token * 5 + 3) % (vocabSize - 1));
}

export function syntheticRows(n: number, seed: number, options: SyntheticOptions = {}): TokensRow[] {
  const { vocabSize = 32, minLength = 8, maxLength = 24, promptLength = 3, noise = 0.1 } = options;
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`syntheticRows: n must be a non-negative integer, got ${n}`);
  if (!Number.isInteger(vocabSize) || vocabSize < 3 || vocabSize > 64) throw new RangeError(`syntheticRows: vocabSize must be an integer in [3, 64], got ${vocabSize}`);
  if (!Number.isInteger(minLength) || !Number.isInteger(maxLength) || minLength < 2 || maxLength < minLength) {
    throw new RangeError(`syntheticRows: need integers 2 <= minLength <= maxLength, got ${minLength}, ${maxLength}`);
  }
  if (!Number.isInteger(promptLength) || promptLength < 1 || promptLength >= minLength) throw new RangeError(`syntheticRows: promptLength must be in [1, minLength), got ${promptLength}`);
  if (!(noise >= 0 && noise <= 1)) throw new RangeError(`syntheticRows: noise must be in [0, 1], got ${noise}`);
  const rng = new Random(seed);
  const randomId = () => 1 + rng.int(vocabSize - 1);
  return Array.from({ length: n }, (_, r): TokensRow => {
    const length = minLength + rng.int(maxLength - minLength + 1);
    const inputIds = new Int32Array(length);
    const lossMask = new Uint8Array(length);
    for (let t = 0; t < length; t++) {
      if (t < promptLength) {
        inputIds[t] = randomId();
      } else {
        inputIds[t] = rng.uniform() < noise ? randomId() : syntheticSuccessor(inputIds[t - 1]!, vocabSize);
        lossMask[t] = 1;
      }
    }
    return { kind: 'tokens', source: `synthetic row ${r}`, inputIds, lossMask };
  });
}

/** A pre-tokenized row as its JSONL/Parquet record, `{input_ids, loss_mask}`. */
export function tokensRowRecord(row: TokensRow): { input_ids: number[]; loss_mask: number[] } {
  return { input_ids: Array.from(row.inputIds), loss_mask: Array.from(row.lossMask) };
}
