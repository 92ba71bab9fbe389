import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { type AddressInfo, Server as NetServer, isIPv6 } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { type AgentError, type AgentErrorCode, agentError } from '../errors.ts';
import { rawErrorResponse } from '../wire.ts';

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Told of each request refused before any handler saw it, with the source address (the request log). */
export type RefusalRecorder = (error: AgentError, client: string | undefined) => void;

/** Explicit limits against slow or idle clients, rather than Node's defaults. */
export const SERVER_TIMEOUTS = Object.freeze({
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  // Room for a 16 KiB token plus ordinary headers, so the token-size check answers before Node's 431.
  maxHeaderSize: 32 * 1024,
});

/** What every server is created with (bench/hit-throughput.ts gives a bare server the same, to measure their cost apart). */
export const SERVER_OPTIONS = Object.freeze({
  headersTimeout: SERVER_TIMEOUTS.headersTimeoutMs,
  requestTimeout: SERVER_TIMEOUTS.requestTimeoutMs,
  keepAliveTimeout: SERVER_TIMEOUTS.keepAliveTimeoutMs,
  maxHeaderSize: SERVER_TIMEOUTS.maxHeaderSize,
  // Node checks the two timeouts above only this often (30 s by default): a slowloris would outlive them.
  connectionsCheckingInterval: 1000,
});

export function createHttpServer(handler: RequestHandler, onRefused?: RefusalRecorder): Server {
  const server: Server = createServer({ ...SERVER_OPTIONS }, handler);
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => answerClientError(error, socket, onRefused));
  return server;
}

/**
 * Requests Node cannot parse, or that arrive too slowly, get the same JSON error shape as every
 * other refusal (Node's default is a bare 400), then the connection is closed.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex, onRefused: RefusalRecorder | undefined): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const { code, message } = clientErrorAnswer(error.code);
  socket.end(rawErrorResponse(code, message));
  onRefused?.(agentError(code, message), (socket as Duplex & { remoteAddress?: string }).remoteAddress);
}

function clientErrorAnswer(code: string | undefined): { code: AgentErrorCode; message: string } {
  if (code === 'HPE_HEADER_OVERFLOW') return { code: 'HeadersTooLarge', message: `request headers are limited to ${SERVER_TIMEOUTS.maxHeaderSize} bytes` };
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return { code: 'RequestTimeout', message: 'the request did not arrive in time' };
  return { code: 'BadRequest', message: 'the request is not valid HTTP/1.1' };
}

/**
 * How every listener binds. reusePort (SO_REUSEPORT): a new agent binds beside the old one during a
 * surge rollout, the kernel spreads new connections over both, and with net.ipv4.tcp_migrate_req
 * (set by `initialize`) the old one's queued connections move to the new one when it closes. Linux
 * shares the port only between sockets of the same effective uid. exclusive: no cluster sharing.
 */
export const LISTEN_OPTIONS = Object.freeze({ reusePort: true, exclusive: true });

export function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    server.listen({ host, port, ...LISTEN_OPTIONS }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/**
 * A connection accepted a moment before the drain, its request not read yet, counts as idle to Node:
 * closing it then resets a request already on its way (seen at the hand-over, test/migration-netns.test.ts).
 * Idle connections are closed only after this long, and each answer meanwhile says `Connection: close`.
 */
const FRESH_CONNECTION_GRACE_MS = 1000;
/**
 * How long the listener still accepts after the drain begins. A connection whose SYN came in just
 * before the node's redirect was taken away (the hand-over) may still wait in the kernel's queue,
 * and closing the listener resets it; during a surge the kernel hands the queue to the new agent
 * anyway (tcp_migrate_req).
 */
const ACCEPT_GRACE_MS = 250;

/**
 * Stops accepting (after ACCEPT_GRACE_MS), lets in-flight requests finish, and closes each connection
 * once it is idle (after FRESH_CONNECTION_GRACE_MS). Connections still busy at the deadline are cut.
 */
export function closeServer(server: Server, deadlineMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve();
  // Every answer from now on tells a keep-alive client not to reuse the connection: it opens a new
  // one (to the other agent, in a surge) rather than racing the idle sweep below.
  server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => res.setHeader('connection', 'close'));
  return new Promise((resolve) => {
    let sweeper: NodeJS.Timeout | undefined;
    const grace = setTimeout(() => {
      server.closeIdleConnections();
      sweeper = setInterval(() => server.closeIdleConnections(), 50);
    }, Math.min(FRESH_CONNECTION_GRACE_MS, deadlineMs));
    const cutoff = setTimeout(() => server.closeAllConnections(), deadlineMs);
    // net's close, not http's: http's also closes every idle connection at once, fresh ones included.
    const stopAccepting = () => NetServer.prototype.close.call(server, () => {
      clearTimeout(grace);
      clearInterval(sweeper);
      clearTimeout(cutoff);
      // (http's close would also stop its request-timeout check, an unref'd timer: a second close emits 'close' twice.)
      resolve();
    });
    if (deadlineMs > ACCEPT_GRACE_MS) setTimeout(stopAccepting, ACCEPT_GRACE_MS);
    else stopAccepting();
  });
}

/** The servers of one handler, one per bind host, and the addresses they hold. */
export interface HostListeners {
  readonly servers: readonly Server[];
  readonly addresses: readonly AddressInfo[];
}

/**
 * One server per host on `port`. A node without IPv6 (disabled, or the address never assigned)
 * gets a warning, not a crash; any other host that cannot be bound is a start-up error.
 */
export async function listenOnHosts(hosts: readonly string[], port: number, handler: RequestHandler, logger: Logger, onRefused?: RefusalRecorder): Promise<HostListeners> {
  const servers: Server[] = [];
  const addresses: AddressInfo[] = [];
  for (const host of hosts) {
    const server = createHttpServer(handler, onRefused);
    try {
      const address = await listen(server, host, port);
      addresses.push(address);
      servers.push(server);
      // The port actually bound: with --port 0 the system chooses one, and this line says which.
      logger.info({ address: host, port: address.port }, 'serving credentials');
    } catch (error) {
      if (!isMissingIpv6(host, error)) {
        // The caller never sees these servers: close them here.
        await Promise.all(servers.map((bound) => closeServer(bound, 0)));
        throw bindError(host, port, error);
      }
      logger.warn({ address: host, port, code: (error as NodeJS.ErrnoException).code }, 'IPv6 bind host unavailable on this node; serving IPv4 only');
    }
  }
  if (addresses.length === 0) throw new Error(`no bind host could be bound (${hosts.join(', ')})`);
  return { servers, addresses };
}

function isMissingIpv6(host: string, error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return isIPv6(host) && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT');
}

function bindError(host: string, port: number, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  return new Error(`cannot listen on ${isIPv6(host) ? `[${host}]` : host}:${port}: ${code}`, { cause: error });
}
