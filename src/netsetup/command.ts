import { execFile } from 'node:child_process';

/** A failed iproute2 or nft command, with what the tool said. */
export class CommandError extends Error {
  readonly command: string;
  readonly stderr: string;
  constructor(command: string, stderr: string, cause: unknown) {
    super(`${command}: ${stderr.trim() || (cause as Error).message}`, { cause });
    this.name = 'CommandError';
    this.command = command;
    this.stderr = stderr;
  }
}

/** Runs a tool with arguments (never through a shell) and returns its stdout. */
export function run(tool: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(tool, [...args], { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error === null) resolve(stdout);
      else reject(new CommandError(`${tool} ${args.join(' ')}`, stderr, error));
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** `ip -json ...`, parsed. */
export async function ipJson<T>(args: readonly string[]): Promise<T> {
  const stdout = await run('ip', ['-json', ...args]);
  return (stdout.trim() === '' ? [] : JSON.parse(stdout)) as T;
}
