import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { Test } from 'tap';

const run = promisify(execFile);

/** Whether this process may make network namespaces (root, iproute2 with netns support). */
export async function canMakeNamespaces(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not root';
  const probe = `pia-probe-${process.pid}`;
  try {
    await run('ip', ['netns', 'add', probe]);
    await run('ip', ['netns', 'del', probe]);
    return undefined;
  } catch (error) {
    return `ip netns is not usable here: ${(error as Error).message}`;
  }
}

export function ip(...args: string[]): Promise<unknown> {
  return run('ip', args);
}

/** Runs a command to its end in the namespace; the limit only catches a hang (a Node client starts in seconds, even loaded). */
export function inNamespace(namespace: string, command: string, args: readonly string[], env?: NodeJS.ProcessEnv) {
  return run('ip', ['netns', 'exec', namespace, command, ...args], { env: env ?? process.env, timeout: 60_000 });
}

/** A command inside a namespace with `input` on its stdin (iptables-restore, nft -f -). */
export function inNamespaceWithInput(namespace: string, command: string, args: readonly string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('ip', ['netns', 'exec', namespace, command, ...args], { timeout: 30_000 }, (error, _stdout, stderr) =>
      error === null ? resolve() : reject(new Error(`${command} ${args.join(' ')}: ${stderr || error.message}`)),
    );
    child.stdin?.end(input);
  });
}

export interface NamespacedProcess {
  readonly child: ChildProcess;
  /** Everything the process wrote so far, stdout and stderr. */
  output(): string;
  readonly exited: Promise<number | null>;
}

/** A long-running Node.js process inside a namespace, resolved once `ready(output)` holds (15 s at most); killed with the test. */
export function startInNamespace(t: Test, namespace: string, args: string[], env: NodeJS.ProcessEnv, ready: (output: string) => boolean): Promise<NamespacedProcess> {
  const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // Awaited, so that what the test removes after (its directories, the namespaces) is no longer in use:
  // a draining agent still writes its probe file. SIGKILL if it outlives its own shutdown deadline.
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(killer);
  });
  let output = '';
  return new Promise((resolve, reject) => {
    // A start under CI load took up to 9 s; the limit only bounds a hang.
    const timer = setTimeout(() => reject(new Error(`not ready after 60 s:\n${output}`)), 60_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (ready(output)) {
        clearTimeout(timer);
        resolve({ child, output: () => output, exited });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', (code) => reject(new Error(`exited with ${code}:\n${output}`)));
  });
}

/**
 * A "node" and a "pod" namespace joined by a veth pair, addressed like EKS's link-local plumbing:
 * the pod routes everything (IPv4 and IPv6) to the node side. Removed, with everything in them
 * (links, routes, nftables), by the registered cleanup, which also runs first to clear leftovers.
 */
export async function makeNodeAndPod(suffix: string, registerCleanup: (cleanup: () => Promise<void>) => void): Promise<{ node: string; pod: string }> {
  const node = `pia-node-${suffix}`;
  const pod = `pia-pod-${suffix}`;
  await makeNamespaces([node, pod], registerCleanup);
  await joinNamespaces({ node, other: pod, nodeLink: `pia-n${suffix}`, otherLink: `pia-p${suffix}`, subnet: '169.254.123' });
  return { node, pod };
}

/** Namespaces, cleared of leftovers first; removed by the cleanup, registered before anything exists so a failure half-way still removes them. */
export async function makeNamespaces(names: readonly string[], registerCleanup: (cleanup: () => Promise<void>) => void): Promise<void> {
  const cleanup = async () => {
    for (const namespace of names) await ip('netns', 'del', namespace).catch(() => undefined);
  };
  await cleanup();
  registerCleanup(cleanup);
  for (const namespace of names) await ip('netns', 'add', namespace);
}

/**
 * A veth pair between the node and another namespace: `<subnet>.1` and fe80::1 on the node side,
 * `<subnet>.2` and fe80::2 on the other, which routes everything to the node. Neighbour discovery
 * answers only for addresses on the receiving link, so IPv6 goes via the node's link-local.
 */
async function joinNamespaces(options: { node: string; other: string; nodeLink: string; otherLink: string; subnet: string }): Promise<void> {
  const { node, other, nodeLink, otherLink, subnet } = options;
  // Made inside the namespaces, so that nothing is left in the host's when a test fails half-way.
  await ip('link', 'add', nodeLink, 'netns', node, 'type', 'veth', 'peer', 'name', otherLink, 'netns', other);
  const steps: [string, string[]][] = [
    [node, ['link', 'set', 'lo', 'up']],
    [node, ['addr', 'add', `${subnet}.1/24`, 'dev', nodeLink]],
    [node, ['-6', 'addr', 'add', 'fe80::1/64', 'dev', nodeLink, 'nodad']],
    [node, ['link', 'set', nodeLink, 'up']],
    [other, ['link', 'set', 'lo', 'up']],
    [other, ['addr', 'add', `${subnet}.2/24`, 'dev', otherLink]],
    [other, ['-6', 'addr', 'add', 'fe80::2/64', 'dev', otherLink, 'nodad']],
    [other, ['link', 'set', otherLink, 'up']],
    [other, ['route', 'add', 'default', 'via', `${subnet}.1`]],
    [other, ['-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', otherLink]],
  ];
  for (const [namespace, args] of steps) await ip('netns', 'exec', namespace, 'ip', ...args);
}

/** Where the hostPort pod of makeHostPortPod lives. IPv6 from the documentation prefix: forwarding needs a non-link-local address. */
export const HOST_PORT_POD = { ipv4: '169.254.124.2', ipv6: '2001:db8:124::2' } as const;

/**
 * A third namespace for a pod holding `hostPort: 80` (an ingress controller): joined to the node on
 * 169.254.124.0/24, reached by the node forwarding, as a CNI's pod is. Removed by the cleanup.
 */
export async function makeHostPortPod(node: string, suffix: string, registerCleanup: (cleanup: () => Promise<void>) => void): Promise<string> {
  const pod = `pia-hp-${suffix}`;
  await makeNamespaces([pod], registerCleanup);
  await joinNamespaces({ node, other: pod, nodeLink: `pia-h${suffix}`, otherLink: `pia-q${suffix}`, subnet: '169.254.124' });
  await ip('netns', 'exec', pod, 'ip', '-6', 'addr', 'add', `${HOST_PORT_POD.ipv6}/128`, 'dev', `pia-q${suffix}`, 'nodad');
  await ip('netns', 'exec', node, 'ip', '-6', 'route', 'add', `${HOST_PORT_POD.ipv6}/128`, 'via', 'fe80::2', 'dev', `pia-h${suffix}`);
  await ip('netns', 'exec', node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1');
  return pod;
}

/**
 * The nat rules the CNI portmap plugin writes for that pod's hostPort 80, through iptables with the
 * nf_tables backend: every local address's port 80, from other pods (PREROUTING) and from the node
 * itself (OUTPUT), DNATed to the pod. A full restore, as tools do: it re-creates the nat tables.
 */
export async function installHostPortRules(node: string): Promise<void> {
  const rules = (to: string, hairpin: string, loopback: string) => `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-DN-ingress - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"k8s-pod-network\\" id: \\"ingress\\"" -m multiport --dports 80 -j CNI-DN-ingress
-A CNI-DN-ingress -s ${hairpin} -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-ingress -s ${loopback} -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-ingress -p tcp -m tcp --dport 80 -j DNAT --to-destination ${to}
COMMIT
`;
  await inNamespaceWithInput(node, 'iptables-nft-restore', [], rules(`${HOST_PORT_POD.ipv4}:80`, `${HOST_PORT_POD.ipv4}/32`, '127.0.0.1/32'));
  await inNamespaceWithInput(node, 'ip6tables-nft-restore', [], rules(`[${HOST_PORT_POD.ipv6}]:80`, `${HOST_PORT_POD.ipv6}/128`, '::1/128'));
}

/** A tiny HTTP server inside a namespace answering `body` on each of `hosts` at `port`. */
export function startHttpServer(t: Test, namespace: string, body: string, port: number, hosts: readonly string[]): Promise<NamespacedProcess> {
  const code = `const http = require('node:http');
const [body, port, ...hosts] = process.argv.slice(1);
let listening = 0;
for (const host of hosts) http.createServer((request, response) => response.end(body)).listen(Number(port), host, () => {
  if (++listening === hosts.length) console.log('listening');
});`;
  return startInNamespace(t, namespace, ['-e', code, body, String(port), ...hosts], { PATH: process.env.PATH ?? '' }, (output) => output.includes('listening'));
}

/** Asks GETs from inside a namespace: `ask(url)` is the body, or `no answer: <reason>` (3 s per request). */
export interface Prober {
  ask(url: string): Promise<string>;
}

/**
 * One client process per namespace, fed URLs on stdin: a spawn per request made each check cost
 * most of a second. Every request opens a new connection (no keep-alive), as a new connection is
 * what a change to the nat rules applies to.
 */
export async function startProber(t: Test, namespace: string): Promise<Prober> {
  const code = `const http = require('node:http');
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const { id, url } = JSON.parse(line);
  const done = (answer) => process.stdout.write(JSON.stringify({ id, answer }) + '\\n');
  const request = http.get(url, { timeout: 3000, agent: false }, (response) => {
    let body = '';
    response.setEncoding('utf8').on('data', (chunk) => (body += chunk)).on('end', () => done(body));
  });
  request.on('timeout', () => request.destroy(new Error('timeout')));
  request.on('error', (error) => done('no answer: ' + (error.code ?? error.message)));
});
console.log('ready');`;
  const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.kill('SIGTERM');
  });
  const waiting = new Map<number, (answer: string) => void>();
  const lines = createInterface({ input: child.stdout });
  await once(lines, 'line'); // ready
  lines.on('line', (line) => {
    const { id, answer } = JSON.parse(line) as { id: number; answer: string };
    waiting.get(id)?.(answer.trim());
    waiting.delete(id);
  });
  child.on('exit', () => waiting.forEach((resolve) => resolve('no answer: the prober exited')));
  let next = 0;
  return {
    ask: (url) =>
      new Promise((resolve) => {
        const id = next++;
        waiting.set(id, resolve);
        child.stdin.write(`${JSON.stringify({ id, url })}\n`);
      }),
  };
}
