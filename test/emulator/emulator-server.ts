// What the EKS Auth and STS emulators share: a loopback HTTP server that closes cleanly, and the
// queue of faults tests inject into the next requests.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Faults for the next requests, in order, each for `times` requests. */
export class FaultQueue<F> {
  readonly #faults: { fault: F; remaining: number }[] = [];

  inject(fault: F, times = 1): void {
    if (times > 0) this.#faults.push({ fault, remaining: times });
  }

  clear(): void {
    this.#faults.length = 0;
  }

  /** The fault for this request, if any. */
  take(): F | undefined {
    const head = this.#faults[0];
    if (head !== undefined && --head.remaining <= 0) this.#faults.shift();
    return head?.fault;
  }
}

export interface EmulatorServerOptions {
  /** For the log line when a request fails inside the emulator. */
  readonly name: string;
  readonly host: string | undefined;
  readonly port: number | undefined;
  readonly log: ((msg: string) => void) | undefined;
  /** `closed` is aborted by close(): latency faults wait on it, so that the process can exit. */
  readonly handle: (req: IncomingMessage, res: ServerResponse, closed: AbortSignal) => Promise<void>;
  /** Answers a request whose handler threw, when nothing was sent yet. */
  readonly answerFailure: (res: ServerResponse) => void;
}

export interface EmulatorServer {
  readonly url: string;
  readonly port: number;
  /** Aborts pending latency faults and drops keep-alive sockets. Idempotent. */
  close(): Promise<void>;
}

export async function startEmulatorServer(options: EmulatorServerOptions): Promise<EmulatorServer> {
  const aborter = new AbortController();
  const server = createServer((req, res) => {
    options.handle(req, res, aborter.signal).catch((error: unknown) => {
      options.log?.(`${options.name}: request failed: ${error instanceof Error ? error.name : 'unknown error'}`);
      if (!res.headersSent && !res.destroyed) options.answerFailure(res);
    });
  });
  server.listen(options.port ?? 0, options.host ?? '127.0.0.1');
  await once(server, 'listening');
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        aborter.abort();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
