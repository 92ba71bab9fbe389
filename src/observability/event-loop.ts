import { monitorEventLoopDelay } from 'node:perf_hooks';

export interface EventLoopSample {
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface EventLoopMonitor {
  /** Delay since the previous sample, then starts a new window. */
  sample(): EventLoopSample;
  close(): void;
}

/** Event-loop delay, sampled every 20 ms by libuv; what a pod waits on top of any request's own work. */
export function monitorEventLoop(): EventLoopMonitor {
  const histogram = monitorEventLoopDelay({ resolution: 20 });
  histogram.enable();
  return {
    sample() {
      const sample = { p99Ms: histogram.percentile(99) / 1e6, maxMs: histogram.max / 1e6 };
      histogram.reset();
      return sample;
    },
    close() {
      histogram.disable();
    },
  };
}
