import { readFile, readdir } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import t from 'tap';

// The layout as the README's map draws it: each folder (or top-level file) a layer, and imports run
// only downwards, never back up, with no circle anywhere. A request's path reads top to bottom.
const LAYERS: readonly (readonly string[])[] = [
  ['cli.ts'],
  ['agent.ts'],
  ['config'],
  ['server'],
  ['observability'],
  ['trust'],
  ['cache'],
  ['upstream'],
  ['associations'],
  ['k8s'],
  ['netsetup'],
  ['token'],
  ['errors.ts', 'wire.ts', 'duration.ts', 'version.ts'],
];
const MAX_LINES = 300;
const MAX_AGENT_LINES = 200;

const SRC = new URL('../src/', import.meta.url).pathname;

async function sourceFiles(): Promise<string[]> {
  return (await readdir(SRC, { recursive: true })).filter((file) => file.endsWith('.ts')).map((file) => join(SRC, file)).sort();
}

/** Every relative module a file imports: static, re-exported, type-only and dynamic. */
function importsOf(file: string, text: string): string[] {
  const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"`;]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((match) => match[1] ?? match[2] ?? '');
  return specifiers.filter((specifier) => specifier.startsWith('.')).map((specifier) => resolve(dirname(file), specifier));
}

function layerOf(file: string): number {
  const top = relative(SRC, file).split('/')[0] ?? '';
  const layer = LAYERS.findIndex((names) => names.includes(top));
  if (layer === -1) throw new Error(`${relative(SRC, file)} is in no layer of the map: add its folder to LAYERS (and to the README's layout)`);
  return layer;
}

/** One circle of imports, as a path of files, if the graph has any. */
function findCycle(graph: ReadonlyMap<string, readonly string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined;
    if (state.get(node) === 'open') return [...stack.slice(stack.indexOf(node)), node];
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      const cycle = visit(next);
      if (cycle !== undefined) return cycle;
    }
    stack.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const node of graph.keys()) {
    const cycle = visit(node);
    if (cycle !== undefined) return cycle;
  }
  return undefined;
}

const files = await sourceFiles();
const texts = new Map(await Promise.all(files.map(async (file) => [file, await readFile(file, 'utf8')] as const)));
const graph = new Map(files.map((file) => [file, importsOf(file, texts.get(file) ?? '')]));

t.test('the import scan sees static, type-only and dynamic imports', async (t) => {
  const sample = `import { a } from './a.ts';\nimport type { B } from '../b.ts';\nexport { c } from './c.ts';\nconst d = await import('./d.ts');\nimport { e } from 'undici';\n`;
  t.same(importsOf('/x/y/file.ts', sample), ['/x/y/a.ts', '/x/b.ts', '/x/y/c.ts', '/x/y/d.ts']);
  t.ok(graph.get(join(SRC, 'upstream/index.ts'))?.includes(join(SRC, 'upstream/sts-client.ts')), 'the lazy STS import is an edge too');
});

t.test('every import in src/ resolves to a file in src/', async (t) => {
  for (const [file, targets] of graph) {
    for (const target of targets) t.ok(texts.has(target), `${relative(SRC, file)} imports ${relative(SRC, target)}, a file of src/`);
  }
});

t.test('no import circle in src/', async (t) => {
  const cycle = findCycle(graph);
  t.equal(cycle?.map((file) => relative(SRC, file)).join(' -> '), undefined, 'no circle');
  t.same(findCycle(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]])), ['a', 'b', 'c', 'a'], 'the search finds one when there is one');
});

t.test('imports run from a layer down, never back up', async (t) => {
  for (const [file, targets] of graph) {
    for (const target of targets) {
      if (!texts.has(target)) continue;
      t.ok(layerOf(target) >= layerOf(file), `${relative(SRC, file)} -> ${relative(SRC, target)}`);
    }
  }
});

t.test('files stay small; agent.ts is wiring only', async (t) => {
  for (const [file, text] of texts) t.ok(text.split('\n').length <= MAX_LINES, `${relative(SRC, file)}: at most ${MAX_LINES} lines`);
  t.ok((texts.get(join(SRC, 'agent.ts')) ?? '').split('\n').length < MAX_AGENT_LINES, `agent.ts under ${MAX_AGENT_LINES} lines`);
});

t.test('the README\'s layout lists every folder and top-level file of src/, and nothing that is gone', async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Layout'), readme.indexOf('\n## ', readme.indexOf('## Layout') + 1));
  const listed = new Set([...section.matchAll(/^\| `src\/([^`/]+)\/?`/gm)].map((match) => match[1]));
  const present = new Set(files.map((file) => relative(SRC, file).split('/')[0]));
  t.same([...present].filter((name) => !listed.has(name)), [], 'every part of src/ is on the map');
  t.same([...listed].filter((name) => name !== undefined && !present.has(name)), [], 'the map names nothing that is gone');
});
