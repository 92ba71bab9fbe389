import { readFile } from 'node:fs/promises';

export interface PolledFile {
  close(): void;
}

export interface PollFileOptions {
  readonly path: string;
  readonly intervalMs: number;
  /** Called with the text on every change after the first read; a throw is reported through onError. */
  readonly onChange: (text: string) => void;
  /** The file could not be read, or onChange refused it; what was applied before stays. */
  readonly onError: (error: Error) => void;
}

/**
 * Reads a small file now (rejecting when it cannot), then re-reads it every interval and reports
 * changes of content. Polling content rather than watching inodes survives what editors and the
 * kubelet do to files: replace by rename, and ConfigMap volumes' atomic symlink swap.
 */
export async function pollFile(options: PollFileOptions): Promise<{ text: string; file: PolledFile }> {
  let last = await readFile(options.path, 'utf8');
  let reading = false;
  let lastError: string | undefined;
  const timer = setInterval(() => {
    if (reading) return;
    reading = true;
    readFile(options.path, 'utf8')
      .then((text) => {
        if (text === last) return;
        last = text;
        lastError = undefined;
        options.onChange(text);
      })
      .catch((error: Error) => {
        // One report per distinct failure, not one every interval while it lasts.
        if (error.message === lastError) return;
        lastError = error.message;
        options.onError(error);
      })
      .finally(() => {
        reading = false;
      });
  }, options.intervalMs).unref();
  return { text: last, file: { close: () => clearInterval(timer) } };
}
