import { Histogram, type HistogramConfiguration } from 'prom-client';

/** A histogram's rows as prom-client exports them, before get() merges sharedLabels into labels. */
interface Rows {
  values: { labels: { le?: number | string }; sharedLabels: { outcome?: string }; value: number; metricName: string }[];
}
// Not in prom-client's typings; test/request-duration.test.ts compares the export with prom-client's own.
const exportRows = ((): ((this: Histogram<'outcome'>) => Promise<Rows>) => {
  const method = (Histogram.prototype as unknown as { getForPromString?: (this: Histogram<'outcome'>) => Promise<Rows> }).getForPromString;
  if (method === undefined) throw new Error('prom-client no longer has Histogram.getForPromString: src/observability/request-duration.ts needs a change');
  return method;
})();

/**
 * pod_identity_request_duration_seconds, whose `hit` series is tallied apart. prom-client's
 * observe() validates and hashes the labels and turns the bucket's bound into a property name on
 * every call, the largest cost of a hit in the agent's own code (bench/README.md); observeHit()
 * adds to one slot of an array, and the `hit` series gets those counts whenever the histogram is
 * read. Every other outcome is observed as usual. The series is exact at every scrape.
 */
export class RequestDurationHistogram extends Histogram<'outcome'> {
  readonly #name: string;
  readonly #bounds: readonly number[];
  /** Hits per bucket, not cumulative; the last slot is +Inf. */
  readonly #hits: Float64Array;
  #hitSeconds = 0;

  constructor(configuration: HistogramConfiguration<'outcome'> & { readonly buckets: readonly number[] }) {
    super({ ...configuration, buckets: [...configuration.buckets] });
    this.#name = configuration.name;
    this.#bounds = configuration.buckets;
    this.#hits = new Float64Array(this.#bounds.length + 1);
    // The series exists from the start, so that get() has rows to add to.
    this.zero({ outcome: 'hit' });
  }

  /** A request answered from the cache, in seconds from arrival to answer. */
  observeHit(seconds: number): void {
    const bounds = this.#bounds;
    let bucket = 0;
    // le is inclusive, as prom-client's own.
    while (bucket < bounds.length && seconds > (bounds[bucket] as number)) bucket += 1;
    this.#hits[bucket] = (this.#hits[bucket] as number) + 1;
    this.#hitSeconds += seconds;
  }

  /** Called by get() and by the registry's text export alike; the hit rows get the tallied counts. */
  async getForPromString(): Promise<Rows> {
    const read = await exportRows.call(this);
    const cumulative = new Map<number | string, number>();
    let total = 0;
    this.#bounds.forEach((bound, i) => cumulative.set(bound, (total += this.#hits[i] as number)));
    total += this.#hits[this.#bounds.length] as number;
    cumulative.set('+Inf', total);
    for (const row of read.values) {
      if (row.sharedLabels.outcome !== 'hit') continue;
      if (row.metricName === `${this.#name}_bucket`) row.value += cumulative.get(row.labels.le ?? '') ?? 0;
      else if (row.metricName === `${this.#name}_sum`) row.value += this.#hitSeconds;
      else if (row.metricName === `${this.#name}_count`) row.value += total;
    }
    return read;
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor calls reset() before this class's fields exist.
    if (!(#hits in this)) return;
    this.#hits.fill(0);
    this.#hitSeconds = 0;
    this.zero({ outcome: 'hit' });
  }
}
