import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestHandler } from './credentials-handler.ts';

/** Explicit limits against slow or idle clients, rather than Node's defaults. */
export const SERVER_TIMEOUTS = Object.freeze({
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  // Room for a 16 KiB token plus ordinary headers, so the token-size check answers before Node's 431.
  maxHeaderSize: 32 * 1024,
});

export function createHttpServer(handler: RequestHandler): Server {
  const server = createServer(
    {
      headersTimeout: SERVER_TIMEOUTS.headersTimeoutMs,
      requestTimeout: SERVER_TIMEOUTS.requestTimeoutMs,
      keepAliveTimeout: SERVER_TIMEOUTS.keepAliveTimeoutMs,
      maxHeaderSize: SERVER_TIMEOUTS.maxHeaderSize,
    },
    handler,
  );
  return server;
}

export function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/**
 * Stops accepting, lets in-flight requests finish, and closes each connection as soon as it is idle.
 * Connections still busy at the deadline are cut.
 */
export function closeServer(server: Server, deadlineMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    // A keep-alive connection becomes idle when its last response is written; close it then.
    const sweeper = setInterval(() => server.closeIdleConnections(), 50);
    const cutoff = setTimeout(() => server.closeAllConnections(), deadlineMs);
    server.close(() => {
      clearInterval(sweeper);
      clearTimeout(cutoff);
      resolve();
    });
    server.closeIdleConnections();
  });
}
