import { connect } from 'node:net';

export interface RawResponse {
  readonly status: number | undefined;
  readonly headers: string;
  readonly body: string;
  /** Everything received, for requests that get more than one response (pipelining). */
  readonly raw: string;
  /** Whether the server closed the connection (rather than the exchange ending on its own terms). */
  readonly closed: boolean;
}

export interface RawExchangeOptions {
  /**
   * Gives up after this long, keeping what arrived: a hang detector, not a pace. The exchange ends
   * as soon as what it waits for has come (the responses, or the close), however long that takes.
   */
  readonly waitMs?: number;
  readonly endAfterWrite?: boolean;
  readonly gapMs?: number;
  /** Whole responses to wait for (1 by default); the server closing the connection ends it too. */
  readonly responses?: number;
  /** Wait for the server to close the connection, whatever it answers first. */
  readonly untilClosed?: boolean;
}

/**
 * How many whole responses `raw` holds: head and body (by Content-Length, or chunked). Answers to
 * HEAD (`bodiless`), 204 and 304 have no body; one with neither length nor chunking ends at the close.
 */
export function completeResponses(raw: string, bodiless = false): number {
  let count = 0;
  let at = 0;
  for (;;) {
    const headEnd = raw.indexOf('\r\n\r\n', at);
    if (headEnd === -1) return count;
    const head = raw.slice(at, headEnd);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]);
    let next = headEnd + 4;
    if (!bodiless && status !== 204 && status !== 304) {
      if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
        for (;;) {
          const lineEnd = raw.indexOf('\r\n', next);
          if (lineEnd === -1) return count;
          const size = Number.parseInt(raw.slice(next, lineEnd), 16);
          if (size === 0) {
            const end = raw.indexOf('\r\n\r\n', next);
            if (end === -1) return count;
            next = end + 4;
            break;
          }
          next = lineEnd + 2 + size + 2;
          if (raw.length < next) return count;
        }
      } else {
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        if (length === null) return count;
        next += Number(length[1]);
        if (raw.length < next) return count;
      }
    }
    count += 1;
    at = next;
  }
}

/** Writes bytes (in chunks, if asked) to a fresh connection and collects what comes back. */
export function rawExchange(port: number, chunks: readonly (string | Buffer)[], options: RawExchangeOptions = {}): Promise<RawResponse> {
  const bodiless = String(chunks[0] ?? '').startsWith('HEAD ');
  const wanted = options.responses ?? 1;
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(received).toString('latin1');
      const [head = '', ...rest] = raw.split('\r\n\r\n');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1];
      resolve({ status: status === undefined ? undefined : Number(status), headers: head, body: rest.join('\r\n\r\n'), raw, closed });
    };
    const timer = setTimeout(finish, options.waitMs ?? 30_000);
    socket.on('data', (chunk: Buffer) => {
      received.push(chunk);
      if (options.untilClosed !== true && completeResponses(Buffer.concat(received).toString('latin1'), bodiless) >= wanted) finish();
    });
    socket.on('end', () => {
      closed = true;
      finish();
    });
    socket.on('error', () => {
      closed = true;
      finish();
    });
    socket.on('connect', async () => {
      for (const chunk of chunks) {
        if (socket.destroyed) return;
        socket.write(chunk);
        if (options.gapMs !== undefined) await new Promise((r) => setTimeout(r, options.gapMs));
      }
      if (options.endAfterWrite === true) socket.end();
    });
  });
}
