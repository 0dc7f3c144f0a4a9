// A tiny WebAssembly binary emitter: enough of the module format (types, one imported memory, functions,
// exports, code) and of the instruction set (i32, f32, v128/SIMD, atomics, structured control flow) to
// generate the CPU matmul kernels at startup. Spec: https://webassembly.github.io/spec/core/binary/.

export type ValType = 'i32' | 'i64' | 'f32' | 'f64' | 'v128';

const VALTYPE_CODE: Record<ValType, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

export function unsignedLeb128(value: number): number[] {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`uleb128 ${value}`);
  const bytes: number[] = [];
  do {
    let byte = value & 0x7f;
    value = Math.floor(value / 128);
    if (value !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (value !== 0);
  return bytes;
}

export function signedLeb128(value: number): number[] {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) throw new RangeError(`sleb128 ${value}`);
  value |= 0; // i32.const takes the two's-complement bits, so 0xffffffff means -1
  const bytes: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0);
    bytes.push(done ? byte : byte | 0x80);
    if (done) return bytes;
  }
}

export function signedLeb128Big(value: bigint): number[] {
  const bytes: number[] = [];
  for (;;) {
    const byte = Number(value & 0x7fn);
    value >>= 7n;
    const done = (value === 0n && (byte & 0x40) === 0) || (value === -1n && (byte & 0x40) !== 0);
    bytes.push(done ? byte : byte | 0x80);
    if (done) return bytes;
  }
}

function simd(op: number): number[] {
  return [0xfd, ...unsignedLeb128(op)];
}

/** Instructions without immediates. */
const PLAIN_OPS = {
  unreachable: [0x00],
  return: [0x0f],
  drop: [0x1a],
  select: [0x1b],
  'i32.eqz': [0x45], 'i32.eq': [0x46], 'i32.ne': [0x47],
  'i32.lt_s': [0x48], 'i32.lt_u': [0x49], 'i32.gt_s': [0x4a], 'i32.gt_u': [0x4b],
  'i32.le_s': [0x4c], 'i32.le_u': [0x4d], 'i32.ge_s': [0x4e], 'i32.ge_u': [0x4f],
  'i32.add': [0x6a], 'i32.sub': [0x6b], 'i32.mul': [0x6c], 'i32.div_s': [0x6d], 'i32.div_u': [0x6e],
  'i32.rem_u': [0x70], 'i32.and': [0x71], 'i32.or': [0x72], 'i32.xor': [0x73],
  'i32.shl': [0x74], 'i32.shr_s': [0x75], 'i32.shr_u': [0x76],
  'f32.add': [0x92], 'f32.sub': [0x93], 'f32.mul': [0x94],
  'i32.reinterpret_f32': [0xbc], 'f32.reinterpret_i32': [0xbe],
  'i32x4.splat': simd(0x11), 'f32x4.splat': simd(0x13),
  'v128.not': simd(0x4d), 'v128.and': simd(0x4e), 'v128.or': simd(0x50),
  'f32x4.ge': simd(0x46),
  'i32x4.extend_low_i16x8_u': simd(0xa9), 'i32x4.extend_high_i16x8_u': simd(0xaa),
  'i32x4.shl': simd(0xab), 'i32x4.shr_u': simd(0xad),
  'f32x4.add': simd(0xe4), 'f32x4.sub': simd(0xe5), 'f32x4.mul': simd(0xe6), 'f32x4.div': simd(0xe7),
  /** a * b + c, fused or not at the engine's choice (relaxed SIMD). */
  'f32x4.relaxed_madd': simd(0x105),
  // For the softmax / cross-entropy kernels (softmax-wasm.ts): exp's range reduction and the row reductions.
  'f32.max': [0x97], 'f64.add': [0xa0], 'f64.promote_f32': [0xbb],
  'f32x4.lt': simd(0x43), 'f32x4.gt': simd(0x44),
  /** b < a ? b : a and a < b ? b : a: one minps / maxps on x86 (f32x4.min / max take several, for NaN). */
  'f32x4.pmin': simd(0xea), 'f32x4.pmax': simd(0xeb),
  /** a & ~b. */
  'v128.andnot': simd(0x4f),
  'i32x4.add': simd(0xae),
} as const;
export type PlainOp = keyof typeof PLAIN_OPS;

/** Memory instructions: opcode and natural alignment (log2 bytes); all take a memarg. */
const MEMORY_OPS = {
  'i32.load': [[0x28], 2], 'f32.load': [[0x2a], 2], 'i32.load16_u': [[0x2f], 1],
  'i32.store': [[0x36], 2], 'f32.store': [[0x38], 2],
  'v128.load': [simd(0x00), 4], 'v128.load16x4_u': [simd(0x04), 3], 'v128.load32_splat': [simd(0x09), 2],
  'v128.load64_zero': [simd(0x5d), 3], 'v128.store': [simd(0x0b), 4],
  'memory.atomic.notify': [[0xfe, 0x00], 2], 'memory.atomic.wait32': [[0xfe, 0x01], 2],
  'i32.atomic.load': [[0xfe, 0x10], 2], 'i32.atomic.store': [[0xfe, 0x17], 2],
  'i32.atomic.rmw.add': [[0xfe, 0x1e], 2],
} as const satisfies Record<string, readonly [readonly number[], number]>;
export type MemoryOp = keyof typeof MEMORY_OPS;

/** Stores of one lane of a v128: opcode and natural alignment (log2 bytes); they take a memarg and a lane. */
const LANE_STORE_OPS = {
  'v128.store64_lane': [simd(0x5b), 3, 2],
} as const satisfies Record<string, readonly [readonly number[], number, number]>;
export type LaneStoreOp = keyof typeof LANE_STORE_OPS;

/** A branch target handed to the body of `block`/`loop`; `br(label)` turns it into a relative depth. */
export interface Label {
  readonly kind: 'block' | 'loop' | 'if';
}

export class WasmFunction {
  readonly code: number[] = [];
  private readonly localTypes: ValType[] = [];
  private readonly labels: Label[] = [];

  constructor(
    readonly index: number,
    readonly name: string,
    readonly params: readonly ValType[],
    readonly results: readonly ValType[],
  ) {}

  /** Index of parameter `i` as a local. */
  param(i: number): number {
    if (i < 0 || i >= this.params.length) throw new RangeError(`${this.name}: no param ${i}`);
    return i;
  }

  local(type: ValType): number {
    this.localTypes.push(type);
    return this.params.length + this.localTypes.length - 1;
  }

  op(name: PlainOp): this {
    this.code.push(...PLAIN_OPS[name]);
    return this;
  }

  get(local: number): this {
    this.code.push(0x20, ...unsignedLeb128(local));
    return this;
  }

  set(local: number): this {
    this.code.push(0x21, ...unsignedLeb128(local));
    return this;
  }

  tee(local: number): this {
    this.code.push(0x22, ...unsignedLeb128(local));
    return this;
  }

  i32(value: number): this {
    this.code.push(0x41, ...signedLeb128(value));
    return this;
  }

  i64(value: bigint): this {
    this.code.push(0x42, ...signedLeb128Big(value));
    return this;
  }

  f32(value: number): this {
    const bytes = new Uint8Array(new Float32Array([value]).buffer);
    this.code.push(0x43, ...bytes);
    return this;
  }

  v128(lanes: readonly [number, number, number, number]): this {
    const bytes = new Uint8Array(new Int32Array(lanes).buffer);
    this.code.push(...simd(0x0c), ...bytes);
    return this;
  }

  /** i8x16.shuffle: byte i of the result is byte lanes[i] of the 32-byte concatenation of the two operands. */
  shuffle(lanes: readonly number[]): this {
    if (lanes.length !== 16 || lanes.some((lane) => !(lane >= 0 && lane < 32))) throw new RangeError('shuffle lanes');
    this.code.push(...simd(0x0d), ...lanes);
    return this;
  }

  /** f32x4.extract_lane: pops a v128, pushes lane `lane` as f32. */
  extractF32(lane: number): this {
    if (!(lane >= 0 && lane < 4)) throw new RangeError('f32x4 lane');
    this.code.push(...simd(0x1f), lane);
    return this;
  }

  /** A load, store or atomic; `offset` is a constant byte offset added to the address operand. */
  mem(name: MemoryOp, offset = 0): this {
    const [opcode, align] = MEMORY_OPS[name];
    this.code.push(...opcode, ...unsignedLeb128(align), ...unsignedLeb128(offset));
    return this;
  }

  /** Stores lane `lane` of the v128 on top of the stack at the address below it plus `offset`. */
  storeLane(name: LaneStoreOp, offset: number, lane: number): this {
    const [opcode, align, lanes] = LANE_STORE_OPS[name];
    if (!(Number.isInteger(lane) && lane >= 0 && lane < lanes)) throw new RangeError(`${name} lane ${lane}`);
    this.code.push(...opcode, ...unsignedLeb128(align), ...unsignedLeb128(offset), lane);
    return this;
  }

  call(fn: WasmFunction): this {
    this.code.push(0x10, ...unsignedLeb128(fn.index));
    return this;
  }

  /** `block` with an empty type: `br(label)` inside jumps past its end. */
  block(body: (exit: Label) => void): this {
    return this.structured(0x02, 'block', body);
  }

  /** `loop` with an empty type: `br(label)` inside jumps back to its start. */
  loop(body: (repeat: Label) => void): this {
    return this.structured(0x03, 'loop', body);
  }

  /** Pops an i32 condition; runs `then` when it is nonzero, else `otherwise`. */
  if(then: () => void, otherwise?: () => void): this {
    const label: Label = { kind: 'if' };
    this.code.push(0x04, 0x40);
    this.labels.push(label);
    then();
    if (otherwise) {
      this.code.push(0x05);
      otherwise();
    }
    this.labels.pop();
    this.code.push(0x0b);
    return this;
  }

  br(label: Label): this {
    this.code.push(0x0c, ...unsignedLeb128(this.depth(label)));
    return this;
  }

  /** Pops an i32; branches when nonzero. */
  brIf(label: Label): this {
    this.code.push(0x0d, ...unsignedLeb128(this.depth(label)));
    return this;
  }

  /**
   * for (counter = start; counter < end; counter += step) body(). `start`, `end` and a non-constant `step`
   * push one i32 each (`end` and `step` are re-evaluated every iteration, so pass a local or a constant).
   */
  forRange(counter: number, start: () => void, end: () => void, step: number | (() => void), body: () => void): this {
    start();
    this.set(counter);
    return this.block((exit) => {
      this.loop((repeat) => {
        this.get(counter);
        end();
        this.op('i32.ge_s').brIf(exit);
        body();
        this.get(counter);
        if (typeof step === 'number') this.i32(step);
        else step();
        this.op('i32.add').set(counter).br(repeat);
      });
    });
  }

  /** The function body as the code section wants it: local declarations, instructions, end. */
  encode(): number[] {
    const groups: [number, ValType][] = [];
    for (const type of this.localTypes) {
      const last = groups[groups.length - 1];
      if (last && last[1] === type) last[0]++;
      else groups.push([1, type]);
    }
    const body = [...unsignedLeb128(groups.length)];
    for (const [count, type] of groups) body.push(...unsignedLeb128(count), VALTYPE_CODE[type]);
    if (this.labels.length !== 0) throw new Error(`${this.name}: unclosed block`);
    // concat, not push(...code): a long unrolled kernel would overflow the argument limit.
    const encoded = body.concat(this.code, [0x0b]);
    return unsignedLeb128(encoded.length).concat(encoded);
  }

  private structured(opcode: number, kind: Label['kind'], body: (label: Label) => void): this {
    const label: Label = { kind };
    this.code.push(opcode, 0x40);
    this.labels.push(label);
    body(label);
    this.labels.pop();
    this.code.push(0x0b);
    return this;
  }

  private depth(label: Label): number {
    const index = this.labels.lastIndexOf(label);
    if (index < 0) throw new Error(`${this.name}: branch to a label that is not open`);
    return this.labels.length - 1 - index;
  }
}

export interface MemoryImport {
  module: string;
  name: string;
  /** In 64 KiB pages. */
  initial: number;
  maximum: number;
  shared: boolean;
}

export class WasmModule {
  readonly functions: WasmFunction[] = [];
  private readonly exported = new Set<WasmFunction>();

  /** `memory: null` builds a module without memory (e.g. a feature probe for WebAssembly.validate). */
  constructor(private readonly memory: MemoryImport | null) {}

  addFunction(name: string, params: readonly ValType[], results: readonly ValType[], exported = true): WasmFunction {
    const fn = new WasmFunction(this.functions.length, name, params, results);
    this.functions.push(fn);
    if (exported) this.exported.add(fn);
    return fn;
  }

  encode(): Uint8Array<ArrayBuffer> {
    const signatures: string[] = [];
    const typeSection: number[] = [];
    const functionSection: number[] = [];
    for (const fn of this.functions) {
      const key = `${fn.params.join(',')}->${fn.results.join(',')}`;
      let typeIndex = signatures.indexOf(key);
      if (typeIndex < 0) {
        typeIndex = signatures.push(key) - 1;
        typeSection.push(0x60, ...vector(fn.params.map((t) => [VALTYPE_CODE[t]])),
          ...vector(fn.results.map((t) => [VALTYPE_CODE[t]])));
      }
      functionSection.push(...unsignedLeb128(typeIndex));
    }
    const importSection: number[] = [];
    if (this.memory) {
      const { module, name, initial, maximum, shared } = this.memory;
      importSection.push(...unsignedLeb128(1), ...utf8(module), ...utf8(name), 0x02, shared ? 0x03 : 0x01,
        ...unsignedLeb128(initial), ...unsignedLeb128(maximum));
    }
    const exports = this.functions.filter((fn) => this.exported.has(fn));
    const exportSection = vector(exports.map((fn) => [...utf8(fn.name), 0x00, ...unsignedLeb128(fn.index)]));
    const codeSection = vector(this.functions.map((fn) => fn.encode()));
    const bytes = [
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
      ...section(1, [...unsignedLeb128(signatures.length), ...typeSection]),
      ...(importSection.length ? section(2, importSection) : []),
      ...section(3, [...unsignedLeb128(this.functions.length), ...functionSection]),
      ...section(7, exportSection),
      ...section(10, codeSection),
    ];
    return new Uint8Array(bytes);
  }
}

function vector(items: number[][]): number[] {
  return [...unsignedLeb128(items.length), ...items.flat()];
}

function section(id: number, content: number[]): number[] {
  return [id, ...unsignedLeb128(content.length), ...content];
}

function utf8(text: string): number[] {
  const bytes = [...new TextEncoder().encode(text)];
  return [...unsignedLeb128(bytes.length), ...bytes];
}
