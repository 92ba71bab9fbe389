// `npm run build`: the one esbuild bundle the image ships (dist/cli.js and its lazy chunks), and
// the options bench/floor-build.ts bundles the dependency floor with, so that both are built alike.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { dirname } from 'node:path';
import { decode, encode } from '@jridgewell/sourcemap-codec';
import { type Node, parse } from 'acorn';
import { type BuildOptions, type OutputFile, type Plugin, build } from 'esbuild';

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

/** A span of generated code: [start, end) offsets into one output file. */
interface Span {
  readonly start: number;
  readonly end: number;
}

type AcornNode = Node & Record<string, unknown>;

/**
 * esbuild's runtime helpers, recognised by their bodies (their names are minified): `__commonJS` calls
 * its factory with `(mod = { exports: {} }).exports`, `__esm` runs its own once as `fn && (res = fn(fn = 0))`.
 */
const HELPER_SHAPES = {
  commonJS: /\(\s*\w+\s*=\s*\{\s*exports\s*:\s*\{\s*\}\s*\}\s*\)\s*\.exports/,
  esm: /\w+\s*&&\s*\(\s*\w+\s*=\s*\w+\(\s*\w+\s*=\s*0\s*\)\s*\)/,
} as const;

function parseModule(text: string): AcornNode {
  return parse(text, { ecmaVersion: 'latest', sourceType: 'module' }) as unknown as AcornNode;
}

/** The names of esbuild's `__commonJS` and `__esm` helpers that `program` defines (the shared runtime chunk does). */
function ownHelpers(program: AcornNode, text: string): Set<string> {
  const names = new Set<string>();
  for (const statement of program.body as AcornNode[]) {
    if (statement.type !== 'VariableDeclaration') continue;
    for (const declarator of statement.declarations as AcornNode[]) {
      const init = declarator.init as AcornNode | null;
      if (init?.type !== 'ArrowFunctionExpression') continue;
      const body = text.slice(init.start, init.end);
      if (Object.values(HELPER_SHAPES).some((shape) => shape.test(body))) names.add((declarator.id as AcornNode).name as string);
    }
  }
  return names;
}

/** A module factory: the function passed to `__commonJS` or `__esm` in a top-level `var`. */
interface Factory extends Span {
  /** The chunk's file name, and the `var` the factory is bound to. */
  readonly file: string;
  readonly name: string;
  readonly body: AcornNode;
}

/** `file`'s factories, by the name of the `var` each is bound to. */
function factoriesOf(file: string, program: AcornNode, isHelper: (name: string) => boolean): Map<string, Factory> {
  const factories = new Map<string, Factory>();
  for (const statement of program.body as AcornNode[]) {
    if (statement.type !== 'VariableDeclaration') continue;
    for (const declarator of statement.declarations as AcornNode[]) {
      const call = declarator.init as AcornNode | null;
      const callee = call?.callee as AcornNode | undefined;
      const [factory] = (call?.arguments ?? []) as AcornNode[];
      if (call?.type !== 'CallExpression' || callee?.type !== 'Identifier' || !isHelper(callee.name as string)) continue;
      if (factory?.type !== 'ArrowFunctionExpression' && factory?.type !== 'FunctionExpression') continue;
      const name = (declarator.id as AcornNode).name as string;
      factories.set(name, { file, name, start: factory.start, end: factory.end, body: factory.body as AcornNode });
    }
  }
  return factories;
}

const FUNCTIONS = new Set(['FunctionExpression', 'ArrowFunctionExpression', 'FunctionDeclaration']);

/** The names called when `node` runs: not inside the functions it only defines, but inside one it calls at once. */
function namesCalled(node: AcornNode, names: string[] = []): string[] {
  if (node.type === 'CallExpression') {
    const callee = node.callee as AcornNode;
    if (callee.type === 'Identifier') names.push(callee.name as string);
    if (FUNCTIONS.has(callee.type)) namesCalled(callee.body as AcornNode, names);
  }
  for (const value of Object.values(node)) {
    for (const child of Array.isArray(value) ? value : [value]) {
      const isNode = child !== null && typeof child === 'object' && typeof (child as AcornNode).type === 'string';
      if (isNode && !FUNCTIONS.has((child as AcornNode).type)) namesCalled(child as AcornNode, names);
    }
  }
  return names;
}

/** The names `program` imports from each sibling chunk, as `local name → [chunk, exported name]`, and what it exports. */
function linksOf(program: AcornNode): { imports: Map<string, [string, string]>; exports: Map<string, string> } {
  const imports = new Map<string, [string, string]>();
  const exports = new Map<string, string>();
  for (const statement of program.body as AcornNode[]) {
    const specifiers = (statement.specifiers ?? []) as AcornNode[];
    if (statement.type === 'ImportDeclaration') {
      const from = String((statement.source as AcornNode).value).replace(/^\.\//, '');
      for (const specifier of specifiers) if (specifier.imported !== undefined) imports.set((specifier.local as AcornNode).name as string, [from, (specifier.imported as AcornNode).name as string]);
    }
    if (statement.type === 'ExportNamedDeclaration') for (const specifier of specifiers) exports.set((specifier.exported as AcornNode).name as string, (specifier.local as AcornNode).name as string);
  }
  return { imports, exports };
}

/** One output chunk: its syntax tree, what it imports and exports, and its factories. */
interface Chunk {
  readonly program: AcornNode;
  readonly links: ReturnType<typeof linksOf>;
  readonly factories: Map<string, Factory>;
}

/** Where `name`, as chunk `file` uses it, is defined: `[chunk, local name]`, following an import from a sibling chunk. */
function definitionOf(chunks: ReadonlyMap<string, Pick<Chunk, 'links'>>, file: string, name: string): [string, string] | undefined {
  const imported = chunks.get(file)?.links.imports.get(name);
  if (imported === undefined) return [file, name];
  const local = chunks.get(imported[0])?.links.exports.get(imported[1]);
  return local === undefined ? undefined : [imported[0], local];
}

/**
 * The factories that run when their chunk loads: called from a chunk's top level, or from the body of
 * one that runs (across chunks too). Those called later, from inside a function (undici's `fetch`,
 * say), stay lazy: compiled eagerly they would only grow the cache (and the RSS that reads it).
 */
function factoriesRunAtLoad(chunks: ReadonlyMap<string, Chunk>): Set<Factory> {
  const run = new Set<Factory>();
  const pending: [string, AcornNode][] = [...chunks].map(([file, chunk]) => [file, chunk.program]);
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [file, node] = next;
    for (const called of namesCalled(node)) {
      const [chunk, local] = definitionOf(chunks, file, called) ?? [];
      const factory = local === undefined ? undefined : chunks.get(chunk as string)?.factories.get(local);
      if (factory === undefined || run.has(factory)) continue;
      run.add(factory);
      pending.push([factory.file, factory.body]);
    }
  }
  return run;
}

/** `text` with each span wrapped in parentheses (spans never overlap: each is a top-level `var`'s), and the offsets the parentheses went in at. */
function parenthesize(text: string, spans: readonly Span[]): { text: string; inserted: number[] } {
  const marks = spans.flatMap((span): [number, string][] => [[span.start, '('], [span.end, ')']]).sort((a, b) => a[0] - b[0]);
  let out = '';
  let from = 0;
  for (const [offset, mark] of marks) {
    out += text.slice(from, offset) + mark;
    from = offset;
  }
  return { text: out + text.slice(from), inserted: marks.map(([offset]) => offset) };
}

/** Moves the generated columns of a source map's mappings past characters inserted at `inserted` (offsets into `text`, the output before insertion). */
function shiftMappings(map: string, text: string, inserted: readonly number[]): string {
  const parsed = JSON.parse(map) as { mappings: string };
  const lineStarts = [0];
  for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', at + 1)) lineStarts.push(at + 1);
  const byLine = new Map<number, number[]>();
  let line = 0;
  for (const offset of inserted) {
    while (line + 1 < lineStarts.length && (lineStarts[line + 1] as number) <= offset) line += 1;
    const columns = byLine.get(line) ?? [];
    columns.push(offset - (lineStarts[line] as number));
    byLine.set(line, columns);
  }
  const lines = decode(parsed.mappings);
  for (const [index, columns] of byLine) {
    for (const segment of lines[index] ?? []) {
      // A character at or after an insertion point moved right by one for each such point.
      let shift = 0;
      while (shift < columns.length && (columns[shift] as number) <= segment[0]) shift += 1;
      segment[0] += shift;
    }
  }
  return JSON.stringify({ ...parsed, mappings: encode(lines) });
}

/**
 * V8 compiles a function only when first called, unless it is wrapped in parentheses, and Node's
 * compile cache holds only what was compiled with the module. esbuild wraps every CommonJS module
 * (and every lazily initialised ESM one) in a factory, and most of them run as their chunk loads: each
 * start compiled them again (10 to 15 ms, bench/README.md). Those are wrapped in parentheses, so the
 * cache holds them (factoriesRunAtLoad); the source maps move with the code. esbuild's helpers, or
 * their calls, not found: the build fails rather than silently losing this.
 */
export function eagerModuleFactories(files: readonly OutputFile[]): { path: string; contents: string }[] {
  const scripts = files.filter((file) => file.path.endsWith('.js'));
  const maps = new Map(files.filter((file) => file.path.endsWith('.js.map')).map((file) => [file.path, file.text]));
  const name = (file: OutputFile) => file.path.slice(file.path.lastIndexOf('/') + 1);
  const parsed = new Map(scripts.map((file) => {
    const program = parseModule(file.text);
    return [name(file), { program, links: linksOf(program), helpers: ownHelpers(program, file.text) }];
  }));
  if ([...parsed.values()].every((chunk) => chunk.helpers.size === 0)) throw new Error("build: esbuild's __commonJS/__esm helpers were not found in the bundle (has esbuild's output changed?)");
  // A chunk's helpers: its own, or the runtime chunk's under the names it imports them as.
  const isHelper = (file: string, used: string) => {
    const [chunk, local] = definitionOf(parsed, file, used) ?? [];
    return local !== undefined && parsed.get(chunk as string)?.helpers.has(local) === true;
  };
  const chunks = new Map([...parsed].map(([file, { program, links }]): [string, Chunk] => [file, { program, links, factories: factoriesOf(file, program, (helper) => isHelper(file, helper)) }]));
  const eager = factoriesRunAtLoad(chunks);
  if (eager.size === 0) throw new Error("build: no module factory made by esbuild's __commonJS/__esm helpers runs at load (has esbuild's output changed?)");
  const written = scripts.flatMap((file) => {
    const { text, inserted } = parenthesize(file.text, [...eager].filter((factory) => factory.file === name(file)));
    const map = maps.get(`${file.path}.map`);
    return [{ path: file.path, contents: text }, ...(map === undefined ? [] : [{ path: `${file.path}.map`, contents: shiftMappings(map, file.text, inserted) }])];
  });
  const rest = files.filter((file) => !file.path.endsWith('.js') && !file.path.endsWith('.js.map')).map((file) => ({ path: file.path, contents: file.text }));
  return [...written, ...rest];
}

/** Bundles as `bundleOptions` says, with the module factories compiled eagerly (eagerModuleFactories). */
export async function bundle(options: BuildOptions): Promise<void> {
  const result = await build({ ...options, write: false });
  for (const file of eagerModuleFactories(result.outputFiles)) {
    mkdirSync(dirname(file.path), { recursive: true });
    writeFileSync(file.path, file.contents);
  }
}

if (import.meta.main) {
  const root = new URL('.', import.meta.url).pathname;
  rmSync(`${root}dist`, { recursive: true, force: true });
  await bundle(bundleOptions(`${root}src/cli.ts`, `${root}dist`));
}
