// Bundles bench/dependency-floor.js as `npm run build` bundles the agent (package.json's build
// script: the same esbuild options), and makes its compile cache as the image does for the agent.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { NODE, runtimeEnv } from './lib.ts';

const ROOT = new URL('..', import.meta.url).pathname;

export interface FloorBuild {
  /** The bundle's entry point. */
  readonly script: string;
  /** The environment to run it with: the image's NODE_OPTIONS and MALLOC_ARENA_MAX, and a compile cache made for it. */
  readonly env: Record<string, string>;
}

export async function buildDependencyFloor(): Promise<FloorBuild> {
  const outdir = mkdtempSync(join(tmpdir(), 'pia-floor-'));
  await build({
    entryPoints: [`${ROOT}bench/dependency-floor.js`],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    splitting: true,
    outdir,
    minify: true,
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
    external: ['supports-color'],
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  });
  const script = join(outdir, 'dependency-floor.js');
  const env = { ...runtimeEnv(false), NODE_COMPILE_CACHE: join(outdir, 'compile-cache') };
  execFileSync(NODE, [script], { env, stdio: 'ignore' });
  return { script, env };
}
