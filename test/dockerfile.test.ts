import { readFile } from 'node:fs/promises';
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
