// The fake apiserver's list/watch engine: each kind's objects and change log,
// one resourceVersion counter, field selectors, and watch streams with replay
// and bookmarks. HTTP routing, auth and status codes stay with the server,
// which hands each GET on a collection here as a parsed request.
import type { ServerResponse } from 'node:http';

/** What the engine needs to know about one kind of object. */
export interface KindSpec<T> {
  /** `kind` of the objects, e.g. 'Pod'; the list is `${kind}List`. */
  readonly kind: string;
  /** Collection name in the path: /api/v1/{resource} and /api/v1/namespaces/{ns}/{resource}. */
  readonly resource: string;
  /** Served at /api/v1/{resource} only, like Nodes. */
  readonly clusterScoped?: boolean;
  /** Field selector labels the apiserver supports for this kind; anything else is refused. */
  readonly fields: ReadonlySet<string>;
  key(obj: T): string;
  namespace(obj: T): string;
  fieldValue(obj: T, field: string): string;
  /** The object's JSON as of resourceVersion rv, without kind/apiVersion (list items carry none). */
  serialize(obj: T, rv: number): Record<string, unknown>;
}

// One term of a field selector, e.g. spec.nodeName=node-a or metadata.namespace!=kube-system.
interface FieldTerm {
  field: string;
  value: string;
  negate: boolean;
}

/** A GET on a collection, parsed: a list, or a watch. */
export interface ListWatchRequest {
  /** undefined: all namespaces. */
  readonly namespace: string | undefined;
  readonly selector: readonly FieldTerm[];
  readonly watch: boolean;
  readonly bookmarks: boolean;
  /** The watch replays changes after this resourceVersion; 0 (or unparsable): it starts from the current state. */
  readonly since: number;
  /** The server ends the watch cleanly after this long, like the apiserver's watch timeout; 0: never. */
  readonly timeoutSeconds: number;
}

interface StoredRecord<T> {
  obj: T;
  rv: number;
}

// A change as seen by the store; each watch classifies it against its own selector.
interface ChangeEvent<T> {
  rv: number;
  before: StoredRecord<T> | undefined;
  after: StoredRecord<T> | undefined;
}

interface OpenWatch {
  res: ServerResponse;
  request: ListWatchRequest;
}

type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** A collection of any kind, as the store and server see it: no method involves the kind's type. */
export type AnyCollection = Pick<Collection<unknown>, 'openWatches' | 'matchPath' | 'parseRequest' | 'list' | 'watch' | 'sendBookmarks' | 'closeWatches' | 'compact'>;

/** Parses `a=b,c!=d` the way the apiserver does for the fields it supports; throws on anything else. */
function parseFieldSelector(raw: string | undefined, supported: ReadonlySet<string>): FieldTerm[] {
  if (raw === undefined || raw === '') return [];
  return raw.split(',').map((part) => {
    const match = /^([^=!]+)(==|!=|=)(.*)$/.exec(part.trim());
    if (!match) throw new Error(`invalid field selector term ${JSON.stringify(part)}`);
    const [, field = '', op, value = ''] = match;
    if (!supported.has(field)) throw new Error(`field label not supported: ${field}`);
    return { field, value, negate: op === '!=' };
  });
}

/** The resourceVersion counter every kind shares, like etcd's revision. */
class Revision {
  #rv = 1;

  get current(): number {
    return this.#rv;
  }

  next(): number {
    return ++this.#rv;
  }
}

/** One kind's objects, change log and open watches; made by ListWatchStore.collection(). */
class Collection<T> {
  readonly spec: KindSpec<T>;
  readonly #revision: Revision;
  readonly #watches = new Set<OpenWatch>();
  readonly #records = new Map<string, StoredRecord<T>>();
  #log: ChangeEvent<T>[] = [];
  /** Watches from before this resourceVersion cannot be replayed: 410, as after etcd's compaction. */
  #compactedAt = 0;
  readonly #path: RegExp;

  constructor(spec: KindSpec<T>, revision: Revision) {
    this.spec = spec;
    this.#revision = revision;
    this.#path = new RegExp(spec.clusterScoped === true ? `^/api/v1/${spec.resource}$` : `^/api/v1/(?:namespaces/([^/]+)/)?${spec.resource}$`);
  }

  get openWatches(): number {
    return this.#watches.size;
  }

  get(key: string): T | undefined {
    return this.#records.get(key)?.obj;
  }

  /** The object at key with the resourceVersion it was stored at. */
  record(key: string): { obj: T; rv: number } | undefined {
    const record = this.#records.get(key);
    return record === undefined ? undefined : { obj: record.obj, rv: record.rv };
  }

  /** Creates or replaces (obj) or deletes (undefined) the object at key, at a new resourceVersion. */
  change(key: string, obj: T | undefined): void {
    const rv = this.#revision.next();
    const before = this.#records.get(key);
    const after = obj === undefined ? undefined : { obj, rv };
    if (after) this.#records.set(key, after);
    else this.#records.delete(key);
    const ev: ChangeEvent<T> = { rv, before, after };
    // Logged for watch replay, and pushed to the open watches it concerns.
    this.#log.push(ev);
    for (const w of this.#watches) this.#deliver(w, ev);
  }

  /** The namespace part of a path this collection serves (undefined: all namespaces), or null when it does not serve it. */
  matchPath(pathname: string): { namespace: string | undefined } | null {
    const m = this.#path.exec(pathname);
    if (!m) return null;
    return { namespace: m[1] === undefined ? undefined : decodeURIComponent(m[1]) };
  }

  /** Throws, with the apiserver's message, on a query it would answer 400 for. */
  parseRequest(namespace: string | undefined, query: Record<string, string>): ListWatchRequest {
    const selector = parseFieldSelector(query.fieldSelector, this.spec.fields);
    // Fake objects carry no labels; silently matching nothing would hide test mistakes.
    if (query.labelSelector) throw new Error('labelSelector is not supported by the fake apiserver');
    return {
      namespace,
      selector,
      watch: query.watch === 'true' || query.watch === '1',
      bookmarks: query.allowWatchBookmarks === 'true',
      since: Number(query.resourceVersion ?? '0'),
      timeoutSeconds: Number(query.timeoutSeconds ?? '0'),
    };
  }

  /** The `${kind}List` body, at the latest resourceVersion of every kind. */
  list(request: ListWatchRequest): Record<string, unknown> {
    const items = [...this.#records.values()].filter((r) => this.#matches(r.obj, request)).map((r) => this.spec.serialize(r.obj, r.rv));
    return { kind: `${this.spec.kind}List`, apiVersion: 'v1', metadata: { resourceVersion: String(this.#revision.current) }, items };
  }

  watch(res: ServerResponse, request: ListWatchRequest): void {
    const w: OpenWatch = { res, request };
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // Clients await response headers before consuming the stream.
    res.flushHeaders();
    if (request.since > 0 && request.since < this.#compactedAt) {
      // The apiserver's answer to a resourceVersion it no longer has: an ERROR event, then the end.
      const status = { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410, message: `too old resource version: ${request.since} (${this.#compactedAt})` };
      res.end(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
      return;
    }
    this.#watches.add(w);
    if (!request.since) {
      // No resourceVersion: like the apiserver, start with synthetic ADDED events for current state.
      for (const r of this.#records.values()) this.#deliver(w, { rv: r.rv, before: undefined, after: r });
    } else {
      // Replay what happened after the client's list so nothing is lost between list and watch.
      for (const ev of this.#log) if (ev.rv > request.since) this.#deliver(w, ev);
    }
    const timeout = request.timeoutSeconds > 0 ? setTimeout(() => res.end(), request.timeoutSeconds * 1000).unref() : undefined;
    // However the stream ends (timeout, client, outage, shutdown), it stops receiving and leaves no timer.
    res.on('close', () => {
      this.#watches.delete(w);
      clearTimeout(timeout);
    });
  }

  sendBookmarks(): void {
    const object = { kind: this.spec.kind, apiVersion: 'v1', metadata: { resourceVersion: String(this.#revision.current) } };
    const line = `${JSON.stringify({ type: 'BOOKMARK', object })}\n`;
    for (const w of this.#watches) if (w.request.bookmarks) w.res.write(line);
  }

  /** Forgets the change log up to now, as etcd's compaction does: older watches get 410. */
  compact(current: number): void {
    this.#log = [];
    this.#compactedAt = current;
  }

  /** Ends every watch: cleanly (`end`), or mid-stream like a network outage (`destroy`). */
  closeWatches(how: 'end' | 'destroy'): void {
    for (const w of this.#watches) w.res[how]();
    this.#watches.clear();
  }

  #matches(obj: T, request: ListWatchRequest): boolean {
    if (request.namespace !== undefined && this.spec.namespace(obj) !== request.namespace) return false;
    return request.selector.every((t) => (this.spec.fieldValue(obj, t.field) === t.value) !== t.negate);
  }

  /**
   * What a watcher with this selector sees for a change: an object moving into the
   * selector is ADDED, out of it DELETED (as the real apiserver's filtered watch does).
   */
  #classify(w: OpenWatch, ev: ChangeEvent<T>): WatchEventType | undefined {
    const was = ev.before !== undefined && this.#matches(ev.before.obj, w.request);
    const is = ev.after !== undefined && this.#matches(ev.after.obj, w.request);
    if (!was && is) return 'ADDED';
    if (was && is) return 'MODIFIED';
    if (was && !is) return 'DELETED';
    return undefined;
  }

  #deliver(w: OpenWatch, ev: ChangeEvent<T>): void {
    const type = this.#classify(w, ev);
    // The object is its state as of this change (for DELETED: its final state).
    const obj = ev.after?.obj ?? ev.before?.obj;
    if (type === undefined || obj === undefined) return;
    const object = { kind: this.spec.kind, apiVersion: 'v1', ...this.spec.serialize(obj, ev.rv) };
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }
}

/** The server's collections, their shared resourceVersion, and the bookmark timer over all their watches. */
export class ListWatchStore {
  readonly #revision = new Revision();
  readonly #collections: AnyCollection[] = [];
  #bookmarkTimer: ReturnType<typeof setInterval> | undefined;

  /** Latest resourceVersion handed out, by any kind. */
  get resourceVersion(): number {
    return this.#revision.current;
  }

  get openWatches(): number {
    let open = 0;
    for (const c of this.#collections) open += c.openWatches;
    return open;
  }

  collection<T>(spec: KindSpec<T>): Collection<T> {
    const collection = new Collection(spec, this.#revision);
    this.#collections.push(collection);
    return collection;
  }

  /** The collection serving a path, and the namespace it names; null when none does. */
  route(pathname: string): { collection: AnyCollection; namespace: string | undefined } | null {
    for (const collection of this.#collections) {
      const served = collection.matchPath(pathname);
      if (served) return { collection, namespace: served.namespace };
    }
    return null;
  }

  /** BOOKMARK every `intervalMs` on the watches that asked for bookmarks; 0 disables. */
  startBookmarks(intervalMs: number): void {
    if (intervalMs <= 0) return;
    this.#bookmarkTimer = setInterval(() => {
      for (const c of this.#collections) c.sendBookmarks();
    }, intervalMs);
    // A forgotten close() must not keep the test process alive.
    this.#bookmarkTimer.unref();
  }

  closeWatches(how: 'end' | 'destroy'): void {
    for (const c of this.#collections) c.closeWatches(how);
  }

  /** Compacts every kind's history (watches resuming from an older resourceVersion than the latest get 410) and ends the open watches cleanly. */
  compact(): void {
    for (const c of this.#collections) c.compact(this.#revision.current);
    this.closeWatches('end');
  }

  /** Stops bookmarks and ends every watch cleanly. */
  close(): void {
    clearInterval(this.#bookmarkTimer);
    this.closeWatches('end');
  }
}
