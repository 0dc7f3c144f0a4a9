// The CPU backend's matmul: WebAssembly SIMD on worker threads (matmul.ts), with the plain reference loop
// kept beside it (reference-matmul.ts) as the readable version and the tests' oracle.
export { matmulDescription, matmulInto } from './matmul.ts';
