// Hook and feature names read back: parseHookName / featureName / parseFeatureName invert the builders for
// every name the model and the analysis write, and refuse look-alikes that are not hook points.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  PROJECTIONS, adapterHookName, featureKind, featureName, hookName, listHookPoints, parseAdapterHookName,
  parseFeatureName, parseHookName, saeFeatureName, shortHookLabel,
} from '../src/model/hooks.ts';

const layerArb = fc.integer({ min: 0, max: 200 });
const projectionArb = fc.constantFrom(...PROJECTIONS);

describe('parseHookName', () => {
  it('reads back every adapter, projection-output and neuron name', () => {
    fc.assert(fc.property(layerArb, projectionArb, fc.nat(100_000), (layer, projection, neuron) => {
      expect(parseAdapterHookName(adapterHookName(layer, projection))).toEqual({ layer, projection });
      const output = parseHookName(hookName.projectionOutput(layer, projection));
      expect(output).toMatchObject({ layer, projection, kind: 'projection_output' });
      expect(parseHookName(`${hookName.projectionOutput(layer, projection)}[${neuron}]`)).toMatchObject({ layer, projection, kind: 'neuron', neuron });
      expect(parseAdapterHookName(hookName.projectionOutput(layer, projection))).toBeNull();
    }));
  });

  it('gives every listed per-layer point its layer, and adapters their listed projection', () => {
    for (const point of listHookPoints(3, 8, 16)) {
      const parsed = parseHookName(point.name);
      if (point.layer === undefined) { expect(parsed).toBeNull(); continue; }
      expect(parsed?.layer).toBe(point.layer);
      expect(parsed?.kind === 'adapter').toBe(point.kind === 'adapter');
      if (point.kind === 'adapter') expect(parsed?.projection).toBe(point.projection);
    }
  });

  it('refuses look-alikes: a projection under the wrong module, an unknown projection, names outside the layers', () => {
    expect(parseAdapterHookName('model.layers.3.mlp.q_proj')).toBeNull();
    expect(parseAdapterHookName('model.layers.3.self_attn.gate_proj')).toBeNull();
    expect(parseAdapterHookName('model.layers.3.mlp.fc_proj')).toBeNull();
    expect(parseAdapterHookName('model.layers.x.mlp.up_proj')).toBeNull();
    expect(parseHookName('lm_head.output')).toBeNull();
    expect(parseHookName('model.layers.2.resid_pre')).toEqual({ layer: 2, kind: 'layer', suffix: 'resid_pre' });
  });

  it('short labels name layer and projection', () => {
    expect(shortHookLabel('model.layers.12.self_attn.o_proj')).toBe('L12 o_proj');
    expect(shortHookLabel('lm_head.output')).toBe('lm_head.output');
  });
});

describe('feature names', () => {
  it('featureName and parseFeatureName are inverse for adapters and MLP neurons', () => {
    fc.assert(fc.property(layerArb, projectionArb, fc.nat(100_000), fc.constantFrom('pos' as const, 'neg' as const), (layer, projection, neuron, polarity) => {
      const adapter = featureName(adapterHookName(layer, projection), polarity);
      expect(adapter).toBe(`L${layer}_${projection}_${polarity}`);
      expect(parseFeatureName(adapter)).toEqual({ kind: 'adapter', layer, projection, polarity });
      const mlp = featureName(`${hookName.projectionOutput(layer, 'up_proj')}[${neuron}]`, polarity);
      expect(mlp).toBe(`L${layer}_up_neuron${neuron}_${polarity}`);
      expect(parseFeatureName(mlp)).toEqual({ kind: 'mlp', layer, projection: 'up_proj', neuron, polarity });
    }));
  });

  it('kinds: adapter, mlp, sae, other', () => {
    expect(featureKind('L12_down_proj_neg')).toBe('adapter');
    expect(featureKind('L3_up_neuron17_pos')).toBe('mlp');
    expect(featureKind(saeFeatureName(42))).toBe('sae');
    expect(parseFeatureName('sae_42')).toEqual({ kind: 'sae', latent: 42 });
    expect(featureKind('L3_fc_proj_pos')).toBe('other');
    expect(featureKind('L3_q_proj_up')).toBe('other');
    expect(featureName('model.norm.output', 'pos')).toBe('model.norm.output_pos');
  });
});
