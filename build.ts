// `npm run build`: the one esbuild bundle the image ships (dist/cli.js and its lazy chunks), and
// the options bench/floor-build.ts bundles the dependency floor with, so that both are built alike.
import { rmSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { dirname } from 'node:path';
import { type BuildOptions, type Plugin, build } from 'esbuild';

/**
 * @kubernetes/client-node declares no `sideEffects`, so a bundler keeps every module its index
 * re-exports: the generated clients and all 757 models (1 MB), evaluated at start, though the agent
 * imports only KubeConfig and RequestContext. Its modules define classes and constants and
 * register nothing, so marking them side-effect free lets esbuild drop what nothing imports.
 */
const clientNodeTreeShaking: Plugin = {
  name: 'client-node-side-effect-free',
  setup(bundle) {
    bundle.onResolve({ filter: /.*/ }, async (args) => {
      if (args.pluginData === 'resolved') return undefined;
      const inside = args.importer.includes('/node_modules/@kubernetes/client-node/') && args.path.startsWith('.');
      if (!inside && !args.path.startsWith('@kubernetes/client-node')) return undefined;
      const resolved = await bundle.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: 'resolved' });
      return { ...resolved, sideEffects: false };
    });
  },
};

/** The namespace of builtinsByRequire's shims, as source maps name them. */
export const BUILTIN_SHIMS = 'builtin-by-require';

/**
 * An ESM bundle imports Node's built-ins as ESM, and Node's ESM facade of a built-in reads every one
 * of its exports, lazy ones included: `node:http`'s WebSocket getters alone load and compile Node's
 * internal copy of undici (763 KB). Taken with require(), as the CommonJS dependencies already take
 * them, a built-in loads what is used.
 */
const builtinsByRequire: Plugin = {
  name: 'builtins-by-require',
  setup(bundle) {
    bundle.onResolve({ filter: /^[a-z_/]+$|^node:/ }, (args) => {
      if (args.kind !== 'import-statement' || !isBuiltin(args.path)) return undefined;
      return { path: args.path, namespace: BUILTIN_SHIMS };
    });
    bundle.onLoad({ filter: /.*/, namespace: BUILTIN_SHIMS }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

/** The namespace of undiciUsedParts's entry, as source maps name it (beside the path of undici's index). */
export const UNDICI_PARTS = 'undici-used-parts';

/**
 * undici's index evaluates all of undici at start (fetch, WebSocket, caches, mocks: 760 KB of the
 * agent's bundle, with Node's zlib, web streams and worker_threads), and the agent and client-node
 * use only its dispatchers and their request(). `undici` resolves to this entry instead: those parts,
 * set up as the index sets them up; a name imported from it that it lacks fails the build.
 */
const undiciUsedParts: Plugin = {
  name: 'undici-used-parts',
  setup(bundle) {
    bundle.onResolve({ filter: /^undici$/ }, async (args) => {
      if (args.pluginData === 'resolved') return undefined;
      const resolved = await bundle.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: 'resolved' });
      return { path: resolved.path, namespace: UNDICI_PARTS };
    });
    bundle.onLoad({ filter: /.*/, namespace: UNDICI_PARTS }, (args) => ({
      resolveDir: dirname(args.path),
      loader: 'js',
      contents: [
        "import Dispatcher from './lib/dispatcher/dispatcher.js';",
        "import api from './lib/api/index.js';",
        // As undici's index does: a dispatcher's request(), stream() and the rest.
        'Object.assign(Dispatcher.prototype, api);',
        'export { Dispatcher };',
        "export { default as Agent } from './lib/dispatcher/agent.js';",
        "export { default as ProxyAgent } from './lib/dispatcher/proxy-agent.js';",
        "export { default as EnvHttpProxyAgent } from './lib/dispatcher/env-http-proxy-agent.js';",
        "export { getGlobalDispatcher } from './lib/global.js';",
        // For client-node's Watch, health and log clients, which the bundle drops (the agent uses none):
        // the whole of undici, evaluated only if one is ever called.
        "export function fetch(input, init) { return require('./index.js').fetch(input, init); }",
      ].join('\n'),
    }));
  },
};

/** Bundles `entry` into `outdir` as the image's bundle is made: ESM, minified, dependencies inside. */
export function bundleOptions(entry: string, outdir: string): BuildOptions {
  return {
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    splitting: true,
    outdir,
    minify: true,
    keepNames: true,
    sourcemap: true,
    legalComments: 'none',
    logLevel: 'warning',
    // An optional dependency of a dependency, absent and never needed here.
    external: ['supports-color'],
    // CommonJS dependencies call require(): an ESM bundle has none of its own.
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    plugins: [clientNodeTreeShaking, builtinsByRequire, undiciUsedParts],
  };
}

if (import.meta.main) {
  const root = new URL('.', import.meta.url).pathname;
  rmSync(`${root}dist`, { recursive: true, force: true });
  await build(bundleOptions(`${root}src/cli.ts`, `${root}dist`));
}
