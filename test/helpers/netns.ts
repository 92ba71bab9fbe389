import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

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

/**
 * A "node" and a "pod" namespace joined by a veth pair, addressed like EKS's link-local plumbing:
 * the pod routes everything (IPv4 and IPv6) to the node side. Removed, with everything in them
 * (links, routes, nftables), by the registered cleanup, which also runs first to clear leftovers.
 */
export async function makeNodeAndPod(suffix: string, registerCleanup: (cleanup: () => Promise<void>) => void): Promise<{ node: string; pod: string }> {
  const node = `pia-node-${suffix}`;
  const pod = `pia-pod-${suffix}`;
  const cleanup = async () => {
    for (const namespace of [node, pod]) await ip('netns', 'del', namespace).catch(() => undefined);
  };
  await cleanup();
  // Registered before anything exists, so that a failure half-way still removes what was made.
  registerCleanup(cleanup);
  await ip('netns', 'add', node);
  await ip('netns', 'add', pod);
  await ip('link', 'add', `pia-n${suffix}`, 'type', 'veth', 'peer', 'name', `pia-p${suffix}`);
  await ip('link', 'set', `pia-n${suffix}`, 'netns', node);
  await ip('link', 'set', `pia-p${suffix}`, 'netns', pod);
  const steps: [string, string[]][] = [
    [node, ['link', 'set', 'lo', 'up']],
    [node, ['addr', 'add', '169.254.123.1/24', 'dev', `pia-n${suffix}`]],
    [node, ['-6', 'addr', 'add', 'fe80::1/64', 'dev', `pia-n${suffix}`, 'nodad']],
    [node, ['link', 'set', `pia-n${suffix}`, 'up']],
    [pod, ['link', 'set', 'lo', 'up']],
    [pod, ['addr', 'add', '169.254.123.2/24', 'dev', `pia-p${suffix}`]],
    [pod, ['-6', 'addr', 'add', 'fe80::2/64', 'dev', `pia-p${suffix}`, 'nodad']],
    [pod, ['link', 'set', `pia-p${suffix}`, 'up']],
    [pod, ['route', 'add', 'default', 'via', '169.254.123.1']],
    // Neighbour discovery answers only for addresses on the receiving link: route via the node's link-local.
    [pod, ['-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', `pia-p${suffix}`]],
  ];
  for (const [namespace, args] of steps) await ip('netns', 'exec', namespace, 'ip', ...args);
  return { node, pod };
}
