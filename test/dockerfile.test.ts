import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { IMAGE_NODE_OPTIONS } from '../bench/lib.ts';

const dockerfile = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8');

t.test('the benchmarks run the agent with the image\'s V8 limits', async (t) => {
  t.match(dockerfile, `ENV NODE_OPTIONS="${IMAGE_NODE_OPTIONS}"`);
});

t.test('the image runs the compiled CLI as a non-root user', async (t) => {
  t.match(dockerfile, 'ENTRYPOINT ["node", "/app/dist/cli.js"]');
  t.match(dockerfile, /^USER 65532:65532$/m);
  t.match(dockerfile, /^FROM node:24-[a-z-]+ AS build$/m);
});

t.test('every package the compiled agent imports survives the image\'s `npm prune --omit=dev`', async (t) => {
  t.match(dockerfile, 'npm prune --omit=dev');
  const manifest = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> };
  const dist = new URL('../dist/', import.meta.url);
  const files = (await readdir(dist, { recursive: true })).filter((file) => file.endsWith('.js'));
  t.ok(files.length > 10, 'dist/ is built (npm test builds it first)');
  const imported = new Set<string>();
  for (const file of files) {
    const text = await readFile(new URL(file, dist), 'utf8');
    for (const [, specifier] of text.matchAll(/(?:from\s+|import\()\s*['"]([^'"]+)['"]/g)) {
      if (specifier === undefined || specifier.startsWith('.') || specifier.startsWith('node:')) continue;
      imported.add(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : (specifier.split('/')[0] as string));
    }
  }
  t.ok(imported.has('@aws-sdk/client-sts') && imported.has('yaml'), 'the scan sees the STS upstream\'s packages');
  for (const name of imported) t.ok(name in manifest.dependencies, `${name} is a production dependency`);
});

// The image must hold production code only: the emulators, the demo and the fakes live in test/.
// The build stage is rebuilt here from exactly what the Dockerfile copies, because dist/ from
// `npm test` keeps whatever older builds left (tsc never deletes outputs), which the image never sees.
t.test('the image carries production code only: no emulator, demo or fake', async (t) => {
  const root = resolve(new URL('..', import.meta.url).pathname);
  const [buildStage = '', runStage = ''] = dockerfile.split(/^FROM /m).slice(1);

  const built = copies(buildStage);
  t.ok(built.length > 0, 'the build stage copies something');
  const buildFiles = ['package.json', 'package-lock.json', 'tsconfig.json', 'src'];
  t.same(built.flatMap((c) => c.sources).filter((s) => !buildFiles.includes(s)), [], 'the build stage copies src/ and build files only');
  t.match(buildStage, /RUN npx tsc -p tsconfig\.json /, 'the build compiles tsconfig.json');
  const taken = copies(runStage);
  t.same(taken.filter((c) => c.from !== 'build').flatMap((c) => c.sources), [], 'the runtime stage copies nothing from the checkout');
  const runtimeFiles = ['/app/package.json', '/app/node_modules', '/app/dist'];
  t.same(taken.flatMap((c) => c.sources).filter((s) => !runtimeFiles.includes(s)), [], 'the runtime stage takes the manifest, dependencies and dist/ only');

  const stage = await mkdtemp(join(tmpdir(), 'image-build-'));
  t.teardown(() => rm(stage, { recursive: true, force: true }));
  for (const { sources, dest } of built) {
    const target = join(stage, dest.replace(/^\/app\/?/, ''));
    for (const source of sources) {
      await cp(join(root, source), dest.endsWith('/') || sources.length > 1 ? join(target, basename(source)) : target, {
        recursive: true,
        filter: (path) => !/(^|\/)(node_modules|dist|\.git)$/.test(relative(root, path)),
      });
    }
  }
  // Stands in for `npm ci`: the dependencies the build resolves against.
  await symlink(join(root, 'node_modules'), join(stage, 'node_modules'));
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const compiled = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: stage }).then(
    () => '',
    (error: { stdout?: string; message: string }) => error.stdout || error.message,
  );
  t.equal(compiled, '', 'the build stage compiles with only what it copies');

  const dist = join(stage, 'dist');
  const files = await readdir(dist, { recursive: true, withFileTypes: true }).then((entries) =>
    entries.filter((e) => e.isFile()).map((e) => relative(dist, join(e.parentPath, e.name))),
  );
  t.ok(files.includes('cli.js') && files.length > 10, 'the staged build produced dist/');
  const emulatorModules = (await readdir(join(root, 'test', 'emulator'))).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3));
  t.ok(emulatorModules.includes('eks-auth-emulator'), 'the emulator modules are found in test/emulator');
  const testLike = (part: string) => /emulat|demo|fake/i.test(part) || emulatorModules.includes(part.replace(/\.js(\.map)?$|\.d\.ts$/, ''));
  t.same(files.filter((file) => file.split(sep).some(testLike)), [], 'no dist/ file is named like test code');

  // Names a test double's code would carry into dist/; word-bounded, so TokenIssuerMismatch (an error code) is fine.
  const exported = (await Promise.all(emulatorModules.map((m) => readFile(join(root, 'test', 'emulator', `${m}.ts`), 'utf8'))))
    .flatMap((text) => [...text.matchAll(/^export (?:async )?(?:function|class|const|interface|type) (\w+)/gm)].map((m) => m[1] as string))
    .filter((name) => /Emulat/.test(name));
  t.ok(exported.includes('startEmulatedCluster') && exported.includes('EksAuthEmulator'), 'the emulators\' exported names are found');
  const names = [...emulatorModules, ...exported, 'TokenIssuer', 'createTokenIssuer', 'verifySigV4', 'FaultQueue', 'startFakeApiServer', 'FakeApiServer', 'runDemo'];
  const mention = new RegExp(`(?<![\\w-])(?:${names.map((n) => n.replace(/[-.]/g, '\\$&')).join('|')})(?![\\w-])`, 'g');
  const mentions: string[] = [];
  const foreign: string[] = [];
  for (const file of files) {
    const text = await readFile(join(dist, file), 'utf8');
    for (const [name] of text.matchAll(mention)) mentions.push(`dist/${file}: ${name}`);
    if (!file.endsWith('.js.map')) continue;
    // A source map names what its file was compiled from.
    for (const source of (JSON.parse(text) as { sources: string[] }).sources) {
      if (!isInside(resolve(dist, dirname(file), source), join(stage, 'src'))) foreign.push(`dist/${file}: ${source}`);
    }
  }
  t.same(mentions, [], 'no dist/ file mentions emulator, fake or demo code');
  t.same(foreign, [], 'every dist/ file is compiled from src/');

  const help = await cli(join(dist, 'cli.js'), '--help');
  t.match(help, { code: 0, stdout: /^Commands:$/m }, 'the staged CLI runs');
  t.notMatch(help.stdout, /\bdemo\b/, 'the CLI lists no demo command');
  const demo = await cli(join(dist, 'cli.js'), 'demo');
  t.equal(demo.code, 2, 'the CLI refuses `demo`');
  t.match(demo.stderr, 'unknown command "demo"', 'as an unknown command');
});

t.test('no src/ file imports code from outside src/ by a relative path', async (t) => {
  const src = resolve(new URL('../src', import.meta.url).pathname);
  // The image has package.json beside dist/, as the checkout has it beside src/.
  const manifest = resolve(src, '..', 'package.json');
  const files = (await readdir(src, { recursive: true })).filter((f) => f.endsWith('.ts'));
  t.ok(files.length > 10, 'src/ is scanned');
  let relativeImports = 0;
  const outside: string[] = [];
  for (const file of files) {
    const text = await readFile(join(src, file), 'utf8');
    // Static and dynamic imports, re-exports, side-effect imports, and files loaded by URL.
    const specifiers = text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)(['"])(\.{1,2}\/[^'"]*)\1/g);
    for (const [, , specifier = ''] of specifiers) {
      relativeImports++;
      const target = resolve(src, dirname(file), specifier);
      if (!isInside(target, src) && target !== manifest) outside.push(`src/${file}: ${specifier}`);
    }
  }
  t.same(outside, [], 'every relative import of src/ stays inside src/');
  t.ok(relativeImports > 50, `the scan sees src/'s relative imports (${relativeImports})`);
});

const run = promisify(execFile);

async function cli(path: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // The limit only catches a hang: a start-up takes about a second, several on a loaded machine.
  return run(process.execPath, [path, ...args], { timeout: 60_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({ code: error.code ?? -1, stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
  );
}

function isInside(path: string, dir: string): boolean {
  return path.startsWith(dir + sep);
}

/** The COPY/ADD instructions of one Dockerfile stage: `--from`, sources and destination. */
function copies(stage: string): { from: string | undefined; sources: string[]; dest: string }[] {
  return [...stage.matchAll(/^(?:COPY|ADD)\s+(.+)$/gm)].map(([, args = '']) => {
    const words = args.trim().split(/\s+/);
    const flags = words.filter((w) => w.startsWith('--'));
    const paths = words.filter((w) => !w.startsWith('--'));
    const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
    return { from, sources: paths.slice(0, -1), dest: paths.at(-1) ?? '' };
  });
}
