import { Writable } from 'node:stream';

/** A JWT's first two segments: '{"' base64url-encoded is "eyJ". */
const JWT_SHAPE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;

export interface LogAudit {
  /** Every line the agent logged, parsed. */
  readonly lines: Record<string, unknown>[];
  /** Strings that must never appear in a line: tokens issued, secrets handed out, node keys. */
  readonly secrets: Set<string>;
  readonly sink: Writable;
  /** Lines containing a secret or anything shaped like a JWT; empty when clean. */
  leaks(): string[];
  /** Throws, failing the test, when a line leaks; meant for teardown, where assertions are too late. */
  assertClean(): void;
}

export function createLogAudit(): LogAudit {
  const raw: string[] = [];
  const lines: Record<string, unknown>[] = [];
  const secrets = new Set<string>();
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) {
        if (line === '') continue;
        raw.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      callback();
    },
  });
  const leaks = () => raw.filter((line) => JWT_SHAPE.test(line) || [...secrets].some((secret) => line.includes(secret)));
  return {
    lines,
    secrets,
    sink,
    leaks,
    assertClean() {
      const leaked = leaks();
      if (leaked.length > 0) throw new Error(`${leaked.length} of ${raw.length} log lines carry a token or secret, the first: ${leaked[0]}`);
    },
  };
}
