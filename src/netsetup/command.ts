import { execFile } from 'node:child_process';

/** The Debian package that holds each tool, named when the tool is missing. */
const PACKAGES: Readonly<Record<string, string>> = { ip: 'iproute2', nft: 'nftables' };

/** A failed iproute2 or nft command, with what the tool said. */
export class CommandError extends Error {
  readonly command: string;
  readonly stderr: string;
  constructor(command: string, stderr: string, cause: unknown) {
    // The first line only: nft follows its error with the offending input and a ^^^ marker, and
    // the CLI reports a failure on one line.
    super(`${command}: ${firstLine(stderr) ?? (cause as Error).message}`, { cause });
    this.name = 'CommandError';
    this.command = command;
    this.stderr = stderr;
  }
}

/** A tool that is not on PATH: the node lacks a package the agent needs. */
export class MissingToolError extends Error {
  readonly tool: string;
  constructor(tool: string) {
    super(`${tool}: not found on PATH; this node needs ${PACKAGES[tool] ?? tool} for the agent's set-up`);
    this.name = 'MissingToolError';
    this.tool = tool;
  }
}

function firstLine(text: string): string | undefined {
  return text.split('\n').find((line) => line.trim() !== '')?.trim();
}

/** Runs a tool with arguments (never through a shell) and returns its stdout. */
export function run(tool: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(tool, [...args], { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error === null) resolve(stdout);
      else if ((error as NodeJS.ErrnoException).code === 'ENOENT') reject(new MissingToolError(tool));
      else reject(new CommandError(`${tool} ${args.join(' ')}`, stderr, error));
    });
    // A tool that exits early (or never started) closes its stdin; the callback reports why.
    child.stdin?.on('error', () => undefined);
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** `ip -json ...`, parsed. */
export async function ipJson<T>(args: readonly string[]): Promise<T> {
  const stdout = await run('ip', ['-json', ...args]);
  return (stdout.trim() === '' ? [] : JSON.parse(stdout)) as T;
}
