import { CommandError, run } from './command.ts';

export interface RedirectTarget {
  readonly family: 'ip' | 'ip6';
  readonly address: string;
}

const TABLE = 'pod_identity_agent';

/**
 * Pods reach the agent at port 80, but a non-root container cannot bind it: Kubernetes puts an
 * added NET_BIND_SERVICE in the bounding set only, and with allowPrivilegeEscalation false no file
 * capability can raise it (kubernetes/kubernetes#56374). So `initialize`, which holds NET_ADMIN,
 * rewrites TCP to <address>:80 into <address>:<port> (DNAT, before routing for pods and on output
 * for host-network pods), and the agent listens unprivileged on <port>. One nftables table of its
 * own, replaced atomically; its comment fingerprints the rules, so an unchanged run changes nothing.
 * Returns whether anything changed.
 */
export async function ensureRedirect(targets: readonly RedirectTarget[], port: number): Promise<boolean> {
  const rules = targets.map(({ family, address }) => {
    const to = family === 'ip6' ? `[${address}]:${port}` : `${address}:${port}`;
    return `${family} daddr ${address} tcp dport 80 dnat ${family} to ${to}`;
  });
  const fingerprint = `pod-identity-agent: port 80 of ${targets.map((t) => t.address).join(' ')} to ${port}`;
  if ((await currentTable())?.includes(`comment "${fingerprint}"`)) return false;
  const chain = (name: string, hook: string, priority: string) =>
    `  chain ${name} {\n    type nat hook ${hook} priority ${priority}; policy accept;\n${rules.map((rule) => `    ${rule}\n`).join('')}  }\n`;
  // Declaring the table first makes the delete valid when it does not exist yet: one atomic swap.
  await run(
    'nft',
    ['-f', '-'],
    `table inet ${TABLE}\ndelete table inet ${TABLE}\ntable inet ${TABLE} {\n  comment "${fingerprint}"\n${chain('prerouting', 'prerouting', 'dstnat')}${chain('output', 'output', '-100')}}\n`,
  );
  return true;
}

async function currentTable(): Promise<string | undefined> {
  try {
    return await run('nft', ['list', 'table', 'inet', TABLE]);
  } catch (error) {
    if (error instanceof CommandError && /no such file or directory/i.test(error.stderr)) return undefined;
    throw error;
  }
}
