// Chooses the matmul implementation for the CPU backend. Until the WebAssembly SIMD kernel lands this
// is the plain reference loop.
export { referenceMatmulInto as matmulInto } from './reference-matmul.ts';
export function matmulDescription(): string {
  return 'reference matmul, 1 thread';
}
