import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decode } from '@jridgewell/sourcemap-codec';
import { parse } from 'acorn';
import { type OutputFile, build } from 'esbuild';
import t, { type Test } from 'tap';
import { bundleOptions, eagerModuleFactories } from '../build.ts';

const run = promisify(execFile);

/** A CommonJS module big enough that compiling it shows in the compile cache, and an entry that imports it and one lazily. */
async function fixture(t: Test): Promise<{ dir: string; entry: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'pia-build-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const statements = Array.from({ length: 300 }, (_, i) => `exports.v${i} = [${i}, ${i + 1}].map((n) => n * 2).join('-');`);
  await writeFile(join(dir, 'big.cjs'), `'use strict';\n${statements.join('\n')}\nexports.sum = (a, b) => a + b;\n`);
  await writeFile(join(dir, 'lazy.js'), "import big from './big.cjs';\nexport const later = big.sum(40, 2);\nexport const onlyWhenCalled = () => require('./later.cjs').value;\n");
  await writeFile(join(dir, 'later.cjs'), "exports.value = 'LOADED_ONLY_WHEN_CALLED';\n");
  await writeFile(join(dir, 'entry.js'), "import big from './big.cjs';\nconst { later } = await import('./lazy.js');\nconsole.log(JSON.stringify({ v299: big.v299, later }));\n");
  return { dir, entry: join(dir, 'entry.js') };
}

async function bundled(entry: string, outdir: string): Promise<OutputFile[]> {
  return (await build({ ...bundleOptions(entry, outdir), write: false })).outputFiles;
}

async function writeAll(files: readonly { path: string; contents: string | Uint8Array }[]): Promise<void> {
  for (const file of files) await writeFile(file.path, file.contents);
}

/** What the bundle prints, and the size of the compile cache its run leaves. */
async function runWithCache(script: string, cacheDir: string): Promise<{ output: string; cacheBytes: number }> {
  const { stdout } = await run(process.execPath, [script], { env: { ...process.env, NODE_COMPILE_CACHE: cacheDir, NODE_OPTIONS: '' } });
  let cacheBytes = 0;
  for (const entry of await readdir(cacheDir, { recursive: true, withFileTypes: true })) if (entry.isFile()) cacheBytes += (await stat(join(entry.parentPath, entry.name))).size;
  return { output: stdout.trim(), cacheBytes };
}

t.test('the module factories are compiled with their chunk, so that the compile cache holds them', async (t) => {
  const { dir, entry } = await fixture(t);
  const plain = await bundled(entry, join(dir, 'plain'));
  const eager = eagerModuleFactories(await bundled(entry, join(dir, 'eager')));
  await mkdir(join(dir, 'plain'));
  await mkdir(join(dir, 'eager'));
  await writeAll(plain.map((file) => ({ path: file.path, contents: file.contents })));
  await writeAll(eager);

  const before = await runWithCache(join(dir, 'plain', 'entry.js'), join(dir, 'cache-plain'));
  const after = await runWithCache(join(dir, 'eager', 'entry.js'), join(dir, 'cache-eager'));
  t.same(JSON.parse(after.output), { v299: '598-600', later: 42 }, 'the bundle still runs as written');
  t.equal(after.output, before.output);
  // Without the parentheses V8 caches the chunk's top level only: the factory's 300 statements are compiled at each start.
  t.ok(after.cacheBytes > before.cacheBytes * 1.5, `the cache holds the factory's code (${before.cacheBytes} → ${after.cacheBytes} bytes)`);
});

/** Whether the factory whose code holds `marker` is wrapped in parentheses, in any of `files`. */
function wrapped(files: readonly { path: string; contents: string }[], marker: string): boolean | undefined {
  for (const file of files.filter((f) => f.path.endsWith('.js'))) {
    const program = parse(file.contents, { ecmaVersion: 'latest', sourceType: 'module', preserveParens: true });
    for (const statement of program.body) {
      if (statement.type !== 'VariableDeclaration') continue;
      for (const { init } of statement.declarations) {
        const [argument] = init?.type === 'CallExpression' ? init.arguments : [];
        if (argument !== undefined && file.contents.slice(argument.start, argument.end).includes(marker)) return argument.type === 'ParenthesizedExpression';
      }
    }
  }
  return undefined;
}

t.test('a factory that runs only when a function calls it stays lazy', async (t) => {
  const { dir, entry } = await fixture(t);
  const eager = eagerModuleFactories(await bundled(entry, join(dir, 'out')));
  t.equal(wrapped(eager, '.v299='), true, 'the module imported at load: compiled with its chunk');
  t.equal(wrapped(eager, 'LOADED_ONLY_WHEN_CALLED'), false, 'the module required inside a function: compiled when first called');
});

t.test('each character the source maps point at is still there after the parentheses', async (t) => {
  const { dir, entry } = await fixture(t);
  const plain = await bundled(entry, join(dir, 'out'));
  const eager = eagerModuleFactories(plain);
  let checked = 0;
  const moved: string[] = [];
  for (const file of plain.filter((f) => f.path.endsWith('.js'))) {
    const map = plain.find((f) => f.path === `${file.path}.map`);
    const newText = eager.find((f) => f.path === file.path)?.contents ?? '';
    const newMap = eager.find((f) => f.path === `${file.path}.map`)?.contents ?? '';
    t.ok(map !== undefined && newMap !== '', `${file.path}: its map is written`);
    const oldLines = decode(JSON.parse(map?.text ?? '{}').mappings as string);
    const newLines = decode(JSON.parse(newMap).mappings as string);
    const [oldText, newTextLines] = [file.text.split('\n'), newText.split('\n')];
    t.equal(newLines.length, oldLines.length, `${file.path}: as many lines mapped`);
    for (const [index, segments] of oldLines.entries()) {
      for (const [k, segment] of segments.entries()) {
        const now = newLines[index]?.[k];
        checked += 1;
        const same = now !== undefined && JSON.stringify(now.slice(1)) === JSON.stringify(segment.slice(1)) && oldText[index]?.[segment[0]] === newTextLines[index]?.[now[0]];
        if (!same) moved.push(`${file.path}:${index}:${segment[0]} mapped "${oldText[index]?.slice(segment[0], segment[0] + 12)}", now "${now === undefined ? '' : newTextLines[index]?.slice(now[0], now[0] + 12)}"`);
      }
    }
  }
  t.same(moved.slice(0, 5), [], `every mapping still points at its character (${moved.length} do not)`);
  t.ok(checked > 50, `${checked} mappings checked`);
  t.ok(eager.some((f) => f.path.endsWith('.js') && f.contents.includes('((')), 'some factory was wrapped');
});

t.test('a bundle without esbuild\'s helpers fails the build rather than losing the eager factories silently', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pia-build-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'entry.js'), 'console.log(1);\n');
  t.throws(() => eagerModuleFactories([]), /helpers were not found/);
  const files = await bundled(join(dir, 'entry.js'), join(dir, 'out'));
  t.throws(() => eagerModuleFactories(files), /helpers were not found/);
});
