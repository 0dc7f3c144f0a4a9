// The order in which training visits rows: a fresh seeded permutation of [0, n) every epoch (as a seeded
// epoch-shuffling sampler does), so a run can stop anywhere and resume at the same row with the same future.
// The saved state is the position (epoch, index) plus the RNG state from *before* that epoch's shuffle: the
// current permutation is rebuilt from it, and the RNG then goes on to shuffle the following epochs.
import { Random } from '../tensor/random.ts';

/** Where a draw comes from: `index` into the permutation of `epoch`. */
export interface DataOrderPosition {
  epoch: number;
  index: number;
}

/** JSON-ready checkpoint of a DataOrder: the next draw's position and the RNG state that shuffled its epoch. */
export interface DataOrderState extends DataOrderPosition {
  size: number;
  rng: [number, number, number, number];
}

export class DataOrder {
  readonly size: number;
  private epochValue = 0;
  private indexValue = 0;
  private epochRng: [number, number, number, number]; // RNG state before this epoch's shuffle
  private nextEpochRng: [number, number, number, number] = [0, 0, 0, 0]; // ... and after it
  private order: number[] = [];

  constructor(size: number, seed: number) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`DataOrder: size must be a positive integer, got ${size}`);
    if (!Number.isInteger(seed)) throw new RangeError(`DataOrder: seed must be an integer, got ${seed}`);
    this.size = size;
    this.epochRng = new Random(seed).state();
    this.shuffleEpoch();
  }

  /** Epoch of the next draw (0-based). */
  get epoch(): number {
    return this.epochValue;
  }

  /** Index within the epoch of the next draw. */
  get index(): number {
    return this.indexValue;
  }

  /** Draws so far: epoch · size + index. */
  get step(): number {
    return this.epochValue * this.size + this.indexValue;
  }

  /** Position of the `step`-th draw (0-based) of any DataOrder of this size. */
  positionOf(step: number): DataOrderPosition {
    if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`DataOrder.positionOf: step must be a non-negative integer, got ${step}`);
    return { epoch: Math.floor(step / this.size), index: step % this.size };
  }

  /** The permutation of the current epoch (a copy). */
  epochOrder(): number[] {
    return this.order.slice();
  }

  /** The next row index; rolls into a freshly shuffled epoch after the last row of one. */
  next(): number {
    const row = this.order[this.indexValue]!;
    this.indexValue++;
    if (this.indexValue === this.size) {
      this.epochValue++;
      this.indexValue = 0;
      this.epochRng = this.nextEpochRng;
      this.shuffleEpoch();
    }
    return row;
  }

  /** The next `count` row indices (a micro-batch), possibly spanning an epoch boundary. */
  take(count: number): number[] {
    return Array.from({ length: count }, () => this.next());
  }

  state(): DataOrderState {
    return { size: this.size, epoch: this.epochValue, index: this.indexValue, rng: [...this.epochRng] };
  }

  static fromState(state: DataOrderState): DataOrder {
    const { size, epoch, index, rng } = state;
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`DataOrder.fromState: size must be a positive integer, got ${size}`);
    if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError(`DataOrder.fromState: epoch must be a non-negative integer, got ${epoch}`);
    if (!Number.isSafeInteger(index) || index < 0 || index >= size) throw new RangeError(`DataOrder.fromState: index must be in [0, ${size}), got ${index}`);
    if (!Array.isArray(rng) || rng.length !== 4 || !rng.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff) || rng.every((w) => w === 0)) {
      throw new RangeError('DataOrder.fromState: rng must be four 32-bit unsigned words, not all zero');
    }
    const order = new DataOrder(size, 0);
    order.epochValue = epoch;
    order.indexValue = index;
    order.epochRng = [rng[0], rng[1], rng[2], rng[3]];
    order.shuffleEpoch();
    return order;
  }

  /** The order a fresh `new DataOrder(size, seed)` has after `step` draws, replaying only the epoch shuffles. */
  static atStep(size: number, seed: number, step: number): DataOrder {
    const order = new DataOrder(size, seed);
    const { epoch, index } = order.positionOf(step);
    for (let e = 0; e < epoch; e++) {
      order.epochRng = order.nextEpochRng;
      order.shuffleEpoch();
    }
    order.epochValue = epoch;
    order.indexValue = index;
    return order;
  }

  private shuffleEpoch(): void {
    const rng = Random.fromState(this.epochRng);
    this.order = rng.shuffle(Array.from({ length: this.size }, (_, i) => i));
    this.nextEpochRng = rng.state();
  }
}
