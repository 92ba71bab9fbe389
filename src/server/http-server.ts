import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
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
  const server: Server = createServer(
    {
      headersTimeout: SERVER_TIMEOUTS.headersTimeoutMs,
      requestTimeout: SERVER_TIMEOUTS.requestTimeoutMs,
      keepAliveTimeout: SERVER_TIMEOUTS.keepAliveTimeoutMs,
      maxHeaderSize: SERVER_TIMEOUTS.maxHeaderSize,
      // Node checks the two timeouts above only this often (30 s by default): a slowloris would outlive them.
      connectionsCheckingInterval: 1000,
    },
    handler,
  );
  server.on('clientError', answerClientError);
  return server;
}

/**
 * Requests Node cannot parse, or that arrive too slowly, get the same JSON error shape as every
 * other refusal (Node's default is a bare 400), then the connection is closed.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const { code, status, reason, message } = clientErrorAnswer(error.code);
  const body = JSON.stringify({ Code: code, Message: message });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

function clientErrorAnswer(code: string | undefined): { code: string; status: number; reason: string; message: string } {
  if (code === 'HPE_HEADER_OVERFLOW') return { code: 'HeadersTooLarge', status: 431, reason: 'Request Header Fields Too Large', message: `request headers are limited to ${SERVER_TIMEOUTS.maxHeaderSize} bytes` };
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return { code: 'RequestTimeout', status: 408, reason: 'Request Timeout', message: 'the request did not arrive in time' };
  return { code: 'BadRequest', status: 400, reason: 'Bad Request', message: 'the request is not valid HTTP/1.1' };
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
