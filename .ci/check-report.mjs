// Belt and braces for .ci/run: reads a vitest JSON report and fails unless the tests CI requires really
// executed instead of skipping: the WebGPU files, the relaxed-SIMD matmul kernel, and (with --browser) the
// headless-Chromium tests.
// Usage: node .ci/check-report.mjs <vitest.json> [--browser]
import { readFileSync } from 'node:fs';

const [reportPath, ...flags] = process.argv.slice(2);
const report = JSON.parse(readFileSync(reportPath, 'utf8'));
const executed = (t) => t.status === 'passed' || t.status === 'failed';
const node = `Node ${process.versions.node}`;
let ok = true;

function requireExecuted(what, tests) {
  const ran = tests.filter(executed).length;
  console.log(`${what} executed: ${ran} of ${tests.length}`);
  if (tests.length === 0 || ran < tests.length) {
    console.error(`CI requires the ${what} to run (${node})`);
    ok = false;
  }
}

const inFiles = (pattern) => report.testResults.filter((f) => pattern.test(f.name)).flatMap((f) => f.assertionResults);
// The guard that fails when no adapter answers is skipped exactly when one does.
requireExecuted('WebGPU tests', inFiles(/webgpu/i).filter((t) => !t.fullName.includes('RANK1_REQUIRE_WEBGPU')));
requireExecuted('relaxed-SIMD matmul tests', inFiles(/cpu-matmul/).filter((t) => t.fullName.startsWith('the relaxed fma kernel')));
if (flags.includes('--browser')) {
  requireExecuted('browser tests', report.testResults.flatMap((f) => f.assertionResults).filter((t) => t.fullName.includes('in headless Chromium')));
}
console.log(`${node}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests + report.numTodoTests} skipped`);
if (!ok) process.exit(1);
