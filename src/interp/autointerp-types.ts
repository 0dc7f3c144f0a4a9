// The rows and settings of autointerpretation, shared by its stages (explainer, categories, scorers), the
// pipeline that composes them (autointerp.ts), the figures and the `rank1 interpret` use case.
import type { FeatureKind } from '../model/hooks.ts';

/** What `rank1 interpret` writes into its folder. */
export const INTERPRET_FILES = {
  explanations: 'explanations.jsonl',
  categories: 'categories.json',
  figures: 'figures.json',
  classes: 'classes.svg',
  densities: 'category-densities.svg',
} as const;

export interface ExplanationRow {
  feature: string;
  kind: FeatureKind;
  explanation: string | null;
  class: 0 | 1 | 2 | null;
  category: string | null;
  /** Why a step failed (after one retry), when it did. */
  error?: string;
}

export interface Category {
  name: string;
  description: string;
}

export type ScoreMethod = 'detection' | 'fuzzing';

/** Confusion counts of a scorer's answer against the truth, and their balanced accuracy. */
export interface Confusion {
  balanced_accuracy: number | null;
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

export interface ScoreRow extends Confusion {
  feature: string;
  kind: FeatureKind;
  class: 0 | 1 | 2 | null;
  method: ScoreMethod;
  error?: string;
}

export type InterpretStage = 'explain' | 'categories' | 'assign' | ScoreMethod;

export interface InterpretProgress {
  stage: InterpretStage;
  done: number;
  total: number;
  failed: number;
}

export interface InterpretResult {
  explanations: ExplanationRow[];
  categories: Category[];
  scores: ScoreRow[];
}
