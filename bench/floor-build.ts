// Bundles bench/dependency-floor.js as `npm run build` bundles the agent (build.ts: the same
// esbuild options), and makes its compile cache as the image does for the agent.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundle, bundleOptions } from '../build.ts';
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
  await bundle({ ...bundleOptions(`${ROOT}bench/dependency-floor.js`, outdir), sourcemap: false });
  const script = join(outdir, 'dependency-floor.js');
  const env = { ...runtimeEnv(false), NODE_COMPILE_CACHE: join(outdir, 'compile-cache') };
  execFileSync(NODE, [script], { env, stdio: 'ignore' });
  return { script, env };
}
