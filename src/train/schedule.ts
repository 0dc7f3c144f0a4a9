// Learning-rate schedule of the paper's code (Hugging Face get_cosine_schedule_with_warmup): linear warmup
// from 0 over ceil(warmupRatio · total) steps, then a half cosine down to 0. `step` is the 0-based index
// of the optimizer update, so the very first update uses lr 0 when there is warmup, as in transformers.

export function warmupSteps(totalSteps: number, warmupRatio: number): number {
  return Math.ceil(totalSteps * warmupRatio);
}

export function cosineWithWarmup(step: number, totalSteps: number, warmupRatio: number, peakLr: number): number {
  const warmup = warmupSteps(totalSteps, warmupRatio);
  if (step < warmup) return (peakLr * step) / Math.max(1, warmup);
  const progress = (step - warmup) / Math.max(1, totalSteps - warmup);
  return peakLr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
