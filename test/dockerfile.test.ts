import { execFile } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { cp, mkdtemp, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { isBuiltin } from 'node:module';
import { IMAGE_MALLOC_ARENA_MAX, IMAGE_NODE_OPTIONS } from '../bench/lib.ts';
import { BUILTIN_SHIMS, UNDICI_PARTS } from '../build.ts';

const dockerfile = await readFile(new URL('../Dockerfile', import.meta.url), 'utf8');

t.test('the benchmarks run the agent with the image\'s V8 limits and malloc setting', async (t) => {
  t.match(dockerfile, `ENV NODE_OPTIONS="${IMAGE_NODE_OPTIONS}"`);
  t.match(dockerfile, `ENV MALLOC_ARENA_MAX=${IMAGE_MALLOC_ARENA_MAX}\n`);
});

t.test('the image runs the compiled CLI as a non-root user', async (t) => {
  t.match(dockerfile, 'ENTRYPOINT ["node", "/app/dist/cli.js"]');
  t.match(dockerfile, /^USER 65532:65532$/m);
  t.match(dockerfile, /^FROM node:24-[a-z-]+ AS build$/m);
});

t.test('the image keeps the bundle\'s compiled code, made with the runtime\'s flags and user', async (t) => {
  const [, runStage = ''] = dockerfile.split(/^FROM /m).slice(1);
  t.match(runStage, /^ENV NODE_COMPILE_CACHE=\/app\/compile-cache$/m);
  t.match(runStage, /^RUN install -d -o 65532 -g 65532 \/app\/compile-cache$/m, 'a cache directory the agent\'s user owns at build time');
  // Node keys the cache by V8 flags and uid: made after ENV NODE_OPTIONS and USER, or never used.
  const order = ['ENV NODE_OPTIONS=', 'USER 65532:65532', 'RUN node /app/dist/cli.js compile-cache\n', 'ENTRYPOINT'].map((line) => runStage.indexOf(line));
  t.ok(order.every((at) => at >= 0) && order.every((at, i) => i === 0 || at > (order[i - 1] as number)), `made with the runtime's flags, as its user (${order.join(', ')})`);
});

// The image must hold production code only: the emulators, the demo and the fakes live in test/.
// The build stage is rebuilt here from exactly what the Dockerfile copies, because dist/ from
// `npm test` keeps whatever older builds left (tsc never deletes outputs), which the image never sees.
t.test('the image carries production code only: no emulator, demo or fake', async (t) => {
  const root = resolve(new URL('..', import.meta.url).pathname);
  const [buildStage = '', runStage = ''] = dockerfile.split(/^FROM /m).slice(1);

  const built = copies(buildStage);
  t.ok(built.length > 0, 'the build stage copies something');
  const buildFiles = ['package.json', 'package-lock.json', 'tsconfig.json', 'build.ts', 'src'];
  t.same(built.flatMap((c) => c.sources).filter((s) => !buildFiles.includes(s)), [], 'the build stage copies src/ and build files only');
  t.match(buildStage, /^RUN npm run build$/m, 'the build stage runs the package\'s build (the bundle)');
  const taken = copies(runStage);
  t.same(taken.filter((c) => c.from !== 'build').flatMap((c) => c.sources), [], 'the runtime stage copies nothing from the checkout');
  const runtimeFiles = ['/app/package.json', '/app/dist'];
  t.same(taken.flatMap((c) => c.sources).filter((s) => !runtimeFiles.includes(s)), [], 'the runtime stage takes the manifest and dist/ only: no node_modules');

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
  // What `npm run build` runs: the package's build script, through sh, with its binaries on PATH.
  const { scripts } = JSON.parse(await readFile(join(stage, 'package.json'), 'utf8')) as { scripts: { build: string } };
  const compiled = await run('sh', ['-c', scripts.build], { cwd: stage, env: { ...process.env, PATH: `${join(stage, 'node_modules', '.bin')}:${process.env.PATH ?? ''}` } }).then(
    ({ stderr }) => stderr,
    (error: { stderr?: string; message: string }) => error.stderr || error.message,
  );
  t.equal(compiled, '', 'the build stage builds, without a warning, from only what it copies');

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
    // A source map names what its file was compiled from: src/, or a production dependency (or
    // build.ts's one-line shim that takes a Node built-in with require(), or its entry into undici, named by undici's index).
    for (const source of (JSON.parse(text) as { sources: string[] }).sources) {
      if (source.startsWith(`${BUILTIN_SHIMS}:`) && isBuiltin(source.slice(BUILTIN_SHIMS.length + 1))) continue;
      const path = source.startsWith(`${UNDICI_PARTS}:`) ? source.slice(UNDICI_PARTS.length + 1) : resolve(dist, dirname(file), source);
      if (!isInside(path, join(stage, 'src')) && !isProductionDependency(path, realpathSync(join(stage, 'node_modules')))) foreign.push(`dist/${file}: ${source}`);
    }
  }
  t.same(mentions, [], 'no dist/ file mentions emulator, fake or demo code');
  t.same(foreign, [], 'every dist/ file is bundled from src/ and production dependencies only');

  const help = await cli(join(dist, 'cli.js'), '--help');
  t.match(help, { code: 0, stdout: /^Commands:$/m }, 'the staged CLI runs');
  t.notMatch(help.stdout, /\bdemo\b/, 'the CLI lists no demo command');
  const demo = await cli(join(dist, 'cli.js'), 'demo');
  t.equal(demo.code, 2, 'the CLI refuses `demo`');
  t.match(demo.stderr, 'unknown command "demo"', 'as an unknown command');

  // What the runtime stage holds: the manifest and dist/, and no node_modules anywhere above them.
  const image = await mkdtemp(join(tmpdir(), 'image-run-'));
  t.teardown(() => rm(image, { recursive: true, force: true }));
  await cp(dist, join(image, 'dist'), { recursive: true });
  await cp(join(stage, 'package.json'), join(image, 'package.json'));
  t.match(await cli(join(image, 'dist', 'cli.js'), 'version'), { code: 0, stdout: `${manifest.version}\n` }, 'the bundle runs without node_modules');
  t.match(await cli(join(image, 'dist', 'cli.js'), 'server', '--help'), { code: 0, stdout: /--cluster-name/ });
  const sts = files.find((file) => /^sts-client-[\w-]+\.js$/.test(file));
  t.ok(sts !== undefined, 'the STS client is a chunk of its own, loaded only with --upstream sts');
  const loaded = await run(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(join(image, 'dist', sts ?? 'missing.js'))}); console.log('loaded')`]).then(({ stdout }) => stdout, (error: Error) => error.message);
  t.equal(loaded, 'loaded\n', 'and that chunk loads without node_modules too');
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

const manifest = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string; dependencies: Record<string, string> };

const lockfile = JSON.parse(readFileSync(new URL('../package-lock.json', import.meta.url), 'utf8')) as { packages: Record<string, { dev?: boolean }> };

/** Inside node_modules, in a package the lockfile installs for production (not `dev: true`). */
function isProductionDependency(path: string, nodeModules: string): boolean {
  if (!isInside(path, nodeModules)) return false;
  const parts = relative(nodeModules, path).split(sep);
  // The innermost node_modules/<name> (or <@scope/name>) holding the file, as the lockfile keys it.
  let key = '';
  for (let i = 0; i < parts.length; i++) {
    if (i > 0 && parts[i - 1] !== 'node_modules') continue;
    const name = parts[i]?.startsWith('@') ? `${parts[i]}/${parts[i + 1]}` : parts[i];
    const candidate = `node_modules/${parts.slice(0, i).join('/')}${i > 0 ? '/' : ''}${name}`;
    if (candidate in lockfile.packages) key = candidate;
  }
  return key !== '' && lockfile.packages[key]?.dev !== true;
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
