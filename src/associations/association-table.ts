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
  /** Entries ignored because an earlier one already associates their service account. */
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

  /** Replaces what one source holds (empty: the source is gone) and says which service accounts that changed. */
  update(source: string, parsed: Pick<ParsedAssociations, 'associations'>): TableUpdate {
    if (!this.#bySource.has(source)) throw new Error(`unknown association source ${source}`);
    this.#bySource.set(source, parsed.associations);
    const merged = new Map<string, Association>();
    const duplicates: string[] = [];
    for (const associations of this.#bySource.values()) {
      for (const association of associations ?? []) {
        const key = accountKey(association.namespace, association.serviceAccount);
        const first = merged.get(key);
        if (first === undefined) merged.set(key, association);
        else duplicates.push(`${association.origin} (${key}): ignored, ${first.origin} already associates this service account`);
      }
    }
    const changed = new Set<string>();
    for (const [key, association] of merged) if (!sameGrant(this.#merged.get(key), association)) changed.add(key);
    for (const key of this.#merged.keys()) if (!merged.has(key)) changed.add(key);
    this.#merged = merged;
    return { changed, duplicates };
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
