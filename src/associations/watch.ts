import type { KubeConfig } from '@kubernetes/client-node';
import { type ConfigMapRef, watchConfigMap } from '../k8s/configmap-watch.ts';
import type { Informer } from '../k8s/informer.ts';
import type { Logger } from 'pino';
import { type Association, AssociationsDocumentError, type ParsedAssociations, loadAssociationsParser, parseAssociations } from './association.ts';
import { type AssociationLookup, AssociationTable } from './association-table.ts';
import { type PolledFile, pollFile } from './file-source.ts';

export interface AssociationSources {
  /** A YAML or JSON file, re-read every few seconds. */
  readonly file: string | undefined;
  /** A ConfigMap watched through the API server; each data key holds a document. */
  readonly configMap: ConfigMapRef | undefined;
}

/** The metrics' bounded label for a source, whose name carries a path. */
export type SourceKind = 'file' | 'configmap';

/** What the associations tell metrics; they know nothing of Prometheus. */
export interface AssociationsObserver {
  /** After every update: entries in force, and entries refused (invalid or duplicate), of one source. */
  counted?(source: SourceKind, valid: number, refused: number): void;
  reloaded?(source: SourceKind, result: 'applied' | 'failed'): void;
}

export interface WatchAssociationsOptions {
  readonly sources: AssociationSources;
  readonly logger: Logger;
  readonly observer?: AssociationsObserver;
  /** Service accounts (`namespace/name`) whose association appeared, changed or went away. */
  readonly onChange: (changed: ReadonlySet<string>) => void;
  readonly fileIntervalMs?: number;
  readonly retryBaseMs?: number;
}

export interface WatchedAssociations extends AssociationLookup {
  /**
   * Reads the sources and keeps them current; the ConfigMap needs the API server's configuration.
   * Until then nothing is found and nothing is complete.
   */
  start(kubeConfig: KubeConfig | undefined): Promise<void>;
  close(): Promise<void>;
}

/**
 * The associations the STS upstream grants from, kept current. The file must be readable at
 * start (a typo in a path fails fast); afterwards a source that cannot be read or parsed keeps
 * its last good associations, and a refused entry never takes the others down with it.
 */
export function watchAssociations(options: WatchAssociationsOptions): WatchedAssociations {
  const { sources, logger, observer = {} } = options;
  const fileSource = sources.file === undefined ? undefined : `file ${sources.file}`;
  const configMapSource = sources.configMap === undefined ? undefined : `configmap ${sources.configMap.namespace}/${sources.configMap.name}`;
  const table = new AssociationTable([fileSource, configMapSource].filter((source) => source !== undefined));

  const kindOf = (source: string): SourceKind => (source === fileSource ? 'file' : 'configmap');
  const problems = new Map<string, readonly string[]>();
  let reportedDuplicates = new Set<string>();

  const apply = (source: string, parsed: ParsedAssociations) => {
    const { changed } = table.update(source, parsed);
    problems.set(source, parsed.problems);
    for (const problem of parsed.problems) logger.warn({ source, problem }, 'association refused');
    // A duplicate is reported when it appears, not again on every reload of any source.
    const duplicates = new Set<string>();
    for (const [name, summary] of table.summaries) {
      for (const duplicate of summary.duplicates) {
        duplicates.add(duplicate);
        if (!reportedDuplicates.has(duplicate)) logger.warn({ source: name, problem: duplicate }, 'association refused');
      }
      observer.counted?.(kindOf(name), summary.inForce, (problems.get(name)?.length ?? 0) + summary.duplicates.length);
    }
    reportedDuplicates = duplicates;
    observer.reloaded?.(kindOf(source), 'applied');
    const summary = table.summaries.get(source);
    logger.info({ source, associations: summary?.inForce ?? 0, refused: parsed.problems.length + (summary?.duplicates.length ?? 0), changed: changed.size, total: table.size }, 'associations loaded');
    if (changed.size > 0) options.onChange(changed);
  };
  const failed = (source: string, error: Error) => {
    observer.reloaded?.(kindOf(source), 'failed');
    logger.error({ source, error: error.message }, 'associations could not be read; the last good ones stay in force');
  };

  let file: PolledFile | undefined;
  let informer: Informer | undefined;

  async function startFile(): Promise<void> {
    if (sources.file === undefined || fileSource === undefined) return;
    const path = sources.file;
    const started = await pollFile({
      path,
      intervalMs: options.fileIntervalMs ?? 2000,
      onChange: (text) => apply(fileSource, parseAssociations(text, fileSource)),
      onError: (error) => failed(fileSource, error),
    }).catch((error: Error) => {
      throw new Error(`cannot read the associations file ${path}: ${(error as NodeJS.ErrnoException).code ?? error.message}`, { cause: error });
    });
    file = started.file;
    try {
      apply(fileSource, parseAssociations(started.text, fileSource));
    } catch (error) {
      file.close();
      throw error;
    }
  }

  function startConfigMap(kubeConfig: KubeConfig | undefined): void {
    if (sources.configMap === undefined || configMapSource === undefined) return;
    if (kubeConfig === undefined) throw new Error(`--associations-configmap needs the Kubernetes API, and no configuration was found`);
    const documents = new ConfigMapDocuments(configMapSource);
    informer = watchConfigMap({
      kubeConfig,
      configMap: sources.configMap,
      logger,
      onData: (data) => {
        if (data === undefined) logger.warn({ source: configMapSource }, 'the associations ConfigMap does not exist: none of its associations apply');
        const { parsed, errors } = documents.update(data ?? {});
        for (const error of errors) failed(configMapSource, error);
        apply(configMapSource, parsed);
      },
      ...(options.retryBaseMs === undefined ? {} : { retryBaseMs: options.retryBaseMs }),
    });
  }

  return {
    find: (namespace, serviceAccount) => table.find(namespace, serviceAccount),
    get complete() {
      return table.complete;
    },
    async start(kubeConfig) {
      await loadAssociationsParser();
      await startFile();
      startConfigMap(kubeConfig);
    },
    async close() {
      file?.close();
      await informer?.close();
    },
  };
}

/**
 * A ConfigMap's keys, each a document of its own (so that teams can own one key each), in key
 * order. A key that stops parsing keeps its last good associations; a key removed takes its own.
 */
class ConfigMapDocuments {
  readonly #source: string;
  readonly #lastGood = new Map<string, { text: string; parsed: ParsedAssociations }>();

  constructor(source: string) {
    this.#source = source;
  }

  update(data: Readonly<Record<string, string>>): { parsed: ParsedAssociations; errors: Error[] } {
    const errors: Error[] = [];
    for (const key of this.#lastGood.keys()) if (!(key in data)) this.#lastGood.delete(key);
    for (const [key, text] of Object.entries(data)) {
      if (this.#lastGood.get(key)?.text === text) continue;
      try {
        this.#lastGood.set(key, { text, parsed: parseAssociations(text, `${this.#source} key ${key}`) });
      } catch (error) {
        if (!(error instanceof AssociationsDocumentError)) throw error;
        errors.push(error);
      }
    }
    const associations: Association[] = [];
    const problems: string[] = [];
    for (const key of [...this.#lastGood.keys()].sort()) {
      const { parsed } = this.#lastGood.get(key)!;
      associations.push(...parsed.associations);
      problems.push(...parsed.problems);
    }
    return { parsed: { associations, problems }, errors };
  }
}
