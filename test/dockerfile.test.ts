import { readFile, readdir } from 'node:fs/promises';
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
