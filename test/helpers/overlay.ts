import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse, parseAllDocuments, stringify } from 'yaml';

// The operator's own overlay, made as daemonset/example tells them to: a copy of the example outside
// the repository, its settings filled in and its paths pointed at the clone.

const run = promisify(execFile);
const ROOT = resolve(new URL('../..', import.meta.url).pathname);
export const DAEMONSET = join(ROOT, 'daemonset');
export const EXAMPLE = join(DAEMONSET, 'example', 'kustomization.yaml');

// Rendered manifests are untyped YAML; the assertions are the schema.
export type Json = Record<string, any>;

export const kubectl: boolean = await run('kubectl', ['version', '--client']).then(
  () => true,
  () => false,
);

/** Settings an operator would write in their copy. */
export const FILLED: Readonly<Record<'CLUSTER_NAME' | 'AWS_REGION' | 'IMAGE', string>> = {
  CLUSTER_NAME: 'prod-1',
  AWS_REGION: 'eu-west-1',
  IMAGE: '111122223333.dkr.ecr.eu-west-1.amazonaws.com/pod-identity-agent:0.1.0',
};

export interface OverlayOptions {
  /** The settings' literals; undefined keeps the example's placeholders. A key set to undefined is left out. */
  readonly settings?: Readonly<Record<string, string | undefined>>;
  /** Under daemonset/, listed after the example's own (../base). */
  readonly components?: readonly string[];
  /** Under daemonset/, listed before the example's own: a mistake the render must refuse. */
  readonly before?: readonly string[];
  /** Added to the kustomization as they are (say, `patches`). */
  readonly extra?: Json;
}

/** The example's kustomization, parsed. */
export async function readExample(): Promise<Json> {
  return parse(await readFile(EXAMPLE, 'utf8')) as Json;
}

/** The example's settings literals, as a map. */
export function settingsOf(kustomization: Json): Record<string, string> {
  const generator = (kustomization.configMapGenerator as Json[]).find((g) => g.name === 'pod-identity-agent-settings');
  return Object.fromEntries(((generator?.literals ?? []) as string[]).map((literal) => literal.split('=', 2) as [string, string]));
}

/** Writes the copy into `dir`: the example, its paths pointed at this clone, with the options applied. */
async function writeOverlay(dir: string, options: OverlayOptions): Promise<void> {
  const kustomization = await readExample();
  const at = (path: string) => relative(dir, join(DAEMONSET, path));
  const own = (kustomization.components as string[]).map((path) => at(join('example', path)));
  kustomization.components = [...(options.before ?? []).map(at), ...own, ...(options.components ?? []).map(at)];
  const generator = (kustomization.configMapGenerator as Json[]).find((g) => g.name === 'pod-identity-agent-settings') as Json;
  const settings = { ...settingsOf(kustomization), ...options.settings };
  generator.literals = Object.entries(settings).filter(([, value]) => value !== undefined).map(([key, value]) => `${key}=${value}`);
  await writeFile(join(dir, 'kustomization.yaml'), stringify({ ...kustomization, ...options.extra }));
}

export async function kustomize(dir: string): Promise<Json[]> {
  const { stdout } = await run('kubectl', ['kustomize', dir]);
  return parseAllDocuments(stdout).map((doc) => doc.toJSON() as Json);
}

/** What `kubectl kustomize` says when it fails; throws if it renders. */
export async function kustomizeError(dir: string): Promise<string> {
  const rendered = await run('kubectl', ['kustomize', dir]).then(
    () => undefined,
    (error: { stderr: string }) => error.stderr,
  );
  if (rendered === undefined) throw new Error(`${dir} rendered`);
  return rendered;
}

async function withOverlay<T>(options: OverlayOptions, use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'pia-overlay-'));
  try {
    await writeOverlay(dir, options);
    return await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The operator's overlay, rendered: the filled settings unless `options.settings` says otherwise. */
export function renderOverlay(options: OverlayOptions = {}): Promise<Json[]> {
  return withOverlay({ settings: FILLED, ...options }, kustomize);
}

export function overlayError(options: OverlayOptions): Promise<string> {
  return withOverlay({ settings: FILLED, ...options }, kustomizeError);
}
