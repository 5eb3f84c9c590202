/**
 * The real `bookd` binary for tests: `BOOKD_BIN` names it (a test that needs it fails, never
 * skips, when it is not set). Each node gets a temporary data directory and loopback ports the
 * node picks itself (port 0); a restart reuses those ports, so clients find it again.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The binary under test. */
export function bookdBin(): string {
  const bin = process.env['BOOKD_BIN'];
  if (!bin) throw new Error('BOOKD_BIN is not set: point it at a bookd binary (cargo build --bin bookd)');
  if (!existsSync(bin)) throw new Error(`BOOKD_BIN=${bin} does not exist`);
  return bin;
}

/** Makes a temporary directory, removed by {@link removeTemp}. */
export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'bookd-ts-'));
}

export function removeTemp(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

const READY_TIMEOUT_MS = 120_000;
const EXIT_TIMEOUT_MS = 30_000;

export class Bookd {
  readonly dataDir: string;
  readonly subcommand: string;
  readonly args: string[];
  child: ChildProcess;
  /** HTTP address (`127.0.0.1:PORT`). */
  http = '';
  /** Binary protocol address. */
  binary = '';
  private output = '';

  private constructor(subcommand: string, dataDir: string, args: string[], child: ChildProcess) {
    this.subcommand = subcommand;
    this.dataDir = dataDir;
    this.args = args;
    this.child = child;
  }

  /** Starts `bookd serve` on `dataDir` with extra `args` and waits for its ready line. */
  static serve(dataDir: string, args: string[] = []): Promise<Bookd> {
    return Bookd.start('serve', dataDir, args);
  }

  /** Starts `bookd SUBCOMMAND` on `dataDir`, on ports of its own, and waits until it is ready. */
  static async start(subcommand: string, dataDir: string, args: string[] = [], ports?: { http: string; binary: string }): Promise<Bookd> {
    const child = spawnNode(subcommand, dataDir, args, ports);
    const node = new Bookd(subcommand, dataDir, args, child);
    await node.ready();
    return node;
  }

  /** Starts the node again on the same data directory and ports (after {@link Bookd.kill9} or {@link Bookd.terminate}). */
  async restart(): Promise<void> {
    this.output = '';
    this.child = spawnNode(this.subcommand, this.dataDir, this.args, { http: this.http, binary: this.binary });
    await this.ready();
  }

  private ready(): Promise<void> {
    const child = this.child;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`bookd did not become ready within ${READY_TIMEOUT_MS} ms:\n${this.output}`));
      }, READY_TIMEOUT_MS);
      let buffered = '';
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (text: string) => {
        buffered += text;
        this.output += text;
        const match = /^bookd ready http=(\S+) binary=(\S+)$/m.exec(buffered);
        if (match) {
          clearTimeout(timer);
          this.http = match[1]!;
          this.binary = match[2]!;
          resolve();
        }
      });
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (text: string) => {
        this.output = (this.output + text).slice(-20_000);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`bookd exited before it was ready (${code ?? signal}):\n${this.output}`));
      });
    });
  }

  /** SIGKILL: nothing flushed, nothing synced. */
  async kill9(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** SIGTERM: a clean stop; resolves with the exit code. */
  async terminate(): Promise<number | null> {
    return this.signal('SIGTERM');
  }

  private signal(signal: NodeJS.Signals): Promise<number | null> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`bookd did not exit within ${EXIT_TIMEOUT_MS} ms of ${signal}`));
      }, EXIT_TIMEOUT_MS);
      child.removeAllListeners('exit');
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
      child.kill(signal);
    });
  }

  /** An HTTP request to the node; the status and the JSON body. */
  async request(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: any }> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token) headers['authorization'] = `Bearer ${token}`;
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(`http://${this.http}${path}`, init);
    const text = await response.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: response.status, json };
  }
}

function spawnNode(subcommand: string, dataDir: string, args: string[], ports?: { http: string; binary: string }): ChildProcess {
  const argv = [
    subcommand,
    '--data-dir',
    dataDir,
    '--http',
    ports?.http ?? '127.0.0.1:0',
    '--listen',
    ports?.binary ?? '127.0.0.1:0',
    ...args,
  ];
  return spawn(bookdBin(), argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BOOKD_LOG: 'warn' },
  });
}
