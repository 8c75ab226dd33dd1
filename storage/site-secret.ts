import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { ConfigError } from '../node/errors.js'
import { writeFileAtomic } from './data-dir.js'

/**
 * A private site's shared secret: 32 random bytes, hex, mode 0600. Members
 * prove they hold it in the membership handshake; it never crosses the wire.
 */
export async function readSiteSecret (path: string): Promise<Uint8Array | undefined> {
  let text: string
  try {
    text = (await readFile(path, 'utf8')).trim()
  } catch (err: any) {
    if (err.code === 'ENOENT') return undefined
    throw new ConfigError(`cannot read site secret ${path}: ${err.code ?? err.message}`)
  }
  if (!/^[0-9a-f]{64}$/i.test(text)) throw new ConfigError(`site secret ${path} is malformed: expected 64 hex characters`)
  return Buffer.from(text, 'hex')
}

export async function writeSiteSecret (path: string, hex?: string): Promise<string> {
  const secret = hex ?? randomBytes(32).toString('hex')
  if (!/^[0-9a-f]{64}$/i.test(secret)) throw new ConfigError('secret: expected 64 hex characters')
  await writeFileAtomic(path, secret.toLowerCase() + '\n', 0o600)
  return secret.toLowerCase()
}
