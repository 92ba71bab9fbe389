import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from '../config.ts';

export type { Logger } from 'pino';

/**
 * The one place that decides what may never reach a log line. Paths cover every shape a
 * token or credential could be logged in by mistake: request headers, upstream results, errors.
 */
export const REDACTED_PATHS: readonly string[] = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'secretAccessKey',
  '*.secretAccessKey',
  'SecretAccessKey',
  '*.SecretAccessKey',
  'sessionToken',
  '*.sessionToken',
  'Token',
  '*.Token',
  'credentials',
  '*.credentials',
];

export interface LoggerOptions {
  readonly level: LogLevel;
  /** Defaults to stdout; tests pass a sink that parses every line. */
  readonly destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: 'pod-identity-agent' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...REDACTED_PATHS], censor: '[REDACTED]' },
      serializers: { err: pino.stdSerializers.err },
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
