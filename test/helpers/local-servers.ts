// Loopback endpoints a test owns, for "nothing answers here" without assuming anything about the
// machine: every port comes from listen(0) and is held for the whole test, so no other process can
// be given it meanwhile (a bind to port 0 never picks a port that is still bound).
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { once } from 'node:events';
import { type IncomingMessage, type Server, createServer } from 'node:http';
import { type AddressInfo, type Server as TcpServer, type Socket, connect, createServer as createTcpServer } from 'node:net';
import type { Test } from 'tap';

export interface LocalEndpoint {
  readonly port: number;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
}

async function listening(server: TcpServer): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/**
 * A port that refuses every connection (ECONNREFUSED) until the test ends. It was listening and
 * is closed, but one connection it accepted stays open: that keeps the port bound, so it cannot be
 * handed to anyone else while the test relies on the refusal.
 */
export async function refusingPort(t: Test): Promise<LocalEndpoint> {
  const listener = createTcpServer();
  const port = await listening(listener);
  const accepted = once(listener, 'connection') as Promise<[Socket]>;
  const client = connect(port, '127.0.0.1');
  client.on('error', () => undefined);
  await once(client, 'connect');
  const [held] = await accepted;
  held.on('error', () => undefined);
  t.teardown(() => {
    client.destroy();
    held.destroy();
  });
  // Closes the listening socket at once; the server object itself lingers until `held` ends.
  listener.close();
  const refused = await new Promise<boolean>((resolve) => {
    const probe = connect(port, '127.0.0.1');
    probe.on('connect', () => {
      probe.destroy();
      resolve(false);
    });
    probe.on('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
  if (!refused) throw new Error(`port ${port} still accepts connections after its listener closed`);
  return { port, url: `http://127.0.0.1:${port}` };
}

export interface SilentServer extends LocalEndpoint {
  /** Requests received (each then left without an answer). */
  readonly requests: number;
  /** Settles when the first request has arrived. */
  readonly arrived: Promise<void>;
}

/** An HTTP server that reads every request and never answers; its connections are cut with the test. */
export async function silentServer(t: Test): Promise<SilentServer> {
  let requests = 0;
  let arrive!: () => void;
  const arrived = new Promise<void>((resolve) => {
    arrive = resolve;
  });
  const server = createServer({ requestTimeout: 0 }, (req) => {
    requests += 1;
    req.resume();
    arrive();
  });
  const port = await listening(server);
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    arrived,
    get requests() {
      return requests;
    },
  };
}

export interface ResettingServer extends LocalEndpoint {
  /** Connections accepted (and each reset at once). */
  readonly connections: number;
}

/** A TCP server that resets every connection as soon as it is accepted. */
export async function resettingServer(t: Test): Promise<ResettingServer> {
  let connections = 0;
  const server = createTcpServer((socket) => {
    connections += 1;
    socket.on('error', () => undefined);
    socket.resetAndDestroy();
  });
  const port = await listening(server);
  t.teardown(() => server.close());
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
  };
}

export interface Gate extends LocalEndpoint {
  /** Settles when the first bytes for the target have come through. */
  readonly arrived: Promise<void>;
  /** Lets the target's answers through, those held and all later ones. */
  release(): void;
}

/**
 * A TCP relay to `targetPort` on loopback that passes requests on at once and holds the answers
 * until release(): an upstream that is slow for exactly as long as the test needs, not for a guessed
 * number of milliseconds.
 */
export async function gate(t: Test, targetPort: number): Promise<Gate> {
  let open = false;
  const held: (() => void)[] = [];
  const sockets = new Set<Socket>();
  let arrive!: () => void;
  const arrived = new Promise<void>((resolve) => {
    arrive = resolve;
  });
  const server = createTcpServer((client) => {
    const target = connect(targetPort, '127.0.0.1');
    const end = () => {
      client.destroy();
      target.destroy();
    };
    for (const socket of [client, target]) {
      sockets.add(socket);
      socket.on('error', end).on('close', end);
    }
    client.once('data', () => arrive());
    client.pipe(target);
    const answer = () => target.pipe(client);
    if (open) answer();
    else {
      target.pause();
      held.push(answer);
    }
  });
  const port = await listening(server);
  t.teardown(() => {
    server.close();
    for (const socket of sockets) socket.destroy();
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    arrived,
    release() {
      open = true;
      for (const answer of held.splice(0)) answer();
    },
  };
}

/**
 * Settles once the in-process HTTP server on `port` has received a request, read it to its end, and
 * run what its handler does next up to its first real wait (a latency fault's timer, say): the
 * moment "the request is in the handler", as an event rather than a guessed sleep.
 */
export function requestRead(port: number): Promise<IncomingMessage> {
  return new Promise((resolve) => {
    const onStart = (message: unknown) => {
      const { request, server } = message as { request: IncomingMessage; server: Server };
      if ((server.address() as AddressInfo | null)?.port !== port) return;
      unsubscribe('http.server.request.start', onStart);
      // The handler's own reading resumes after this listener; what it runs next (a microtask
      // chain) is done by the time an immediate runs.
      request.once('end', () => setImmediate(() => resolve(request)));
    };
    subscribe('http.server.request.start', onStart);
  });
}
