// `npm run lint`: the import graph of src/ has no cycle and no arrow that runs back up the layers
// (kernels < tensor < model < train, eval < interp, serve < cli). Type-only imports count: a circle of
// types is still a circle for a reader.
const layer = (name) => `^src/${name}/`;

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'An import cycle: move what both modules need into a leaf module that both import.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'kernels-below-tensor',
      comment: 'Kernels are the bottom layer: they import nothing above them.',
      severity: 'error',
      from: { path: layer('kernels') },
      to: { path: '^src/(?!kernels/)' },
    },
    {
      name: 'tensor-below-model',
      comment: 'The tensor layer imports only kernels.',
      severity: 'error',
      from: { path: layer('tensor') },
      to: { path: '^src/(?!(tensor|kernels)/)' },
    },
    {
      name: 'model-below-train',
      comment: 'The model imports nothing from training, analysis, evaluation, the server or the CLI.',
      severity: 'error',
      from: { path: layer('model') },
      to: { path: '^src/(train|interp|eval|serve|cli|demo|dashboard|browser)/' },
    },
    {
      name: 'train-below-interp',
      comment: 'Training never imports the analysis layer, the server or the CLI.',
      severity: 'error',
      from: { path: layer('train') },
      to: { path: '^src/(interp|eval|serve|cli|demo|dashboard|browser)/' },
    },
    {
      name: 'nothing-imports-cli',
      comment: 'The CLI is the top: only the CLI itself imports it.',
      severity: 'error',
      from: { path: '^src/(?!cli/)' },
      to: { path: layer('cli') },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.tsx', '.js', '.json'] },
  },
};
