import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // WebGPU (Dawn) and the CPU worker pool are process-wide resources: one fork runs every file.
    pool: 'forks',
    fileParallelism: false,
  },
});
