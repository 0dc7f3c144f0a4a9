// Headless Chromium for page tests (Debian's `chromium`, driven by playwright-core). Suites run where it is
// installed; .ci/run installs it and sets RANK1_REQUIRE_BROWSER=1, so there a missing browser fails.
import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';

export const chromiumPath = process.env['CHROMIUM_PATH'] ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p)) ?? null;
export const browserRequired = process.env['RANK1_REQUIRE_BROWSER'] === '1';
/** Whether browser suites run here (present, or required so that absence fails). */
export const browserTests = chromiumPath !== null || browserRequired;

/** Chromium headless with WebGPU (SwiftShader when there is no GPU); fails naming the package when absent. */
export async function launchChromium(): Promise<Browser> {
  if (chromiumPath === null) throw new Error('no chromium: apt-get install chromium (or set CHROMIUM_PATH)');
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: chromiumPath, args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu'] });
}
