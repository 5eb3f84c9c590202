/** Files of the repository the package lives in, found by walking up from this file. */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root: the first directory above this file with docs/protocol.md. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 12; depth++) {
    if (existsSync(join(dir, 'docs', 'protocol.md'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error('docs/protocol.md not found above the test files');
}

export function readRepoFile(path: string): string {
  return readFileSync(join(repoRoot(), path), 'utf8');
}

export function fromHex(hex: string): Buffer {
  const clean = hex.replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new Error(`not hex: ${hex.slice(0, 40)}`);
  return Buffer.from(clean, 'hex');
}
