import type { Association, ParsedAssociations } from './association.ts';

/** What the STS upstream asks: the association of a service account, if any. */
export interface AssociationLookup {
  find(namespace: string, serviceAccount: string): Association | undefined;
  /** False until every source has been read once: a miss before that is not yet a verdict. */
  readonly complete: boolean;
}

export interface TableUpdate {
  /** Service accounts (`namespace/name`) whose association appeared, changed or went away. */
  readonly changed: ReadonlySet<string>;
}

/** What one source contributes once merged: entries in force, and entries shadowed by an earlier one. */
export interface SourceSummary {
  readonly inForce: number;
  /** One message per ignored entry, naming it and the entry that already associates its service account. */
  readonly duplicates: readonly string[];
}

/**
 * Associations merged from several sources (the file, then the ConfigMap). Like EKS, a service
 * account has at most one: the first source, then the first entry, wins, and a later duplicate
 * is reported rather than silently shadowing it.
 */
export class AssociationTable implements AssociationLookup {
  readonly #bySource = new Map<string, readonly Association[] | undefined>();
  #merged = new Map<string, Association>();
  #summaries = new Map<string, SourceSummary>();

  /** `sources` in precedence order; each is pending until its first update. */
  constructor(sources: readonly string[]) {
    for (const source of sources) this.#bySource.set(source, undefined);
  }

  get complete(): boolean {
    for (const associations of this.#bySource.values()) if (associations === undefined) return false;
    return true;
  }

  get size(): number {
    return this.#merged.size;
  }

  find(namespace: string, serviceAccount: string): Association | undefined {
    return this.#merged.get(accountKey(namespace, serviceAccount));
  }

  /** Per source, after the last update: a change in one source can shadow or free entries of another. */
  get summaries(): ReadonlyMap<string, SourceSummary> {
    return this.#summaries;
  }

  /** Replaces what one source holds (empty: the source is gone) and says which service accounts that changed. */
  update(source: string, parsed: Pick<ParsedAssociations, 'associations'>): TableUpdate {
    if (!this.#bySource.has(source)) throw new Error(`unknown association source ${source}`);
    this.#bySource.set(source, parsed.associations);
    const merged = new Map<string, Association>();
    const summaries = new Map<string, { inForce: number; duplicates: string[] }>();
    for (const [name, associations] of this.#bySource) {
      const summary = { inForce: 0, duplicates: [] as string[] };
      summaries.set(name, summary);
      for (const association of associations ?? []) {
        const key = accountKey(association.namespace, association.serviceAccount);
        const first = merged.get(key);
        if (first === undefined) {
          merged.set(key, association);
          summary.inForce += 1;
        } else {
          summary.duplicates.push(`${association.origin} (${key}): ignored, ${first.origin} already associates this service account`);
        }
      }
    }
    const changed = new Set<string>();
    for (const [key, association] of merged) if (!sameGrant(this.#merged.get(key), association)) changed.add(key);
    for (const key of this.#merged.keys()) if (!merged.has(key)) changed.add(key);
    this.#merged = merged;
    this.#summaries = summaries;
    return { changed };
  }
}

export function accountKey(namespace: string, serviceAccount: string): string {
  return `${namespace}/${serviceAccount}`;
}

/** The same credentials would be asked for (where the entry was written does not matter). */
function sameGrant(a: Association | undefined, b: Association): boolean {
  return (
    a !== undefined &&
    a.roleArn === b.roleArn &&
    a.externalId === b.externalId &&
    a.sessionDurationSeconds === b.sessionDurationSeconds &&
    a.disableSessionTags === b.disableSessionTags &&
    a.policy === b.policy
  );
}
