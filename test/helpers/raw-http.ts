import { connect } from 'node:net';

export interface RawResponse {
  readonly status: number | undefined;
  readonly headers: string;
  readonly body: string;
  /** Everything received, for requests that get more than one response (pipelining). */
  readonly raw: string;
  /** Whether the server closed the connection before `waitMs` ran out. */
  readonly closed: boolean;
}

/** Writes bytes (in chunks, if asked) to a fresh connection and collects what comes back. */
export function rawExchange(port: number, chunks: readonly (string | Buffer)[], options: { waitMs?: number; endAfterWrite?: boolean; gapMs?: number } = {}): Promise<RawResponse> {
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
    const timer = setTimeout(finish, options.waitMs ?? 1000);
    socket.on('data', (chunk: Buffer) => received.push(chunk));
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
