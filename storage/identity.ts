import { readFile, stat } from 'node:fs/promises'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { IdentityError } from '../node/errors.js'
import { writeFileAtomic } from './data-dir.js'

/**
 * The node's Ed25519 key, kept in the data directory with mode 0600 so the
 * peer id survives restarts. A key that exists but cannot be read or decoded
 * is an error: silently making a new one would turn the host into a stranger
 * to its site and orphan its jobs.
 */
export async function loadOrCreateIdentity (path: string): Promise<PrivateKey> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw new IdentityError(`cannot read identity key ${path}: ${err.code ?? err.message}`)
    const key = await generateKeyPair('Ed25519')
    await writeFileAtomic(path, privateKeyToProtobuf(key), 0o600)
    return key
  }
  try {
    const key = privateKeyFromProtobuf(bytes)
    if (key.type !== 'Ed25519') throw new Error(`key type ${key.type}`)
    return key
  } catch (err: any) {
    throw new IdentityError(`identity key ${path} is corrupt (${err.message}); move it away to create a new identity`)
  }
}

export async function identityMode (path: string): Promise<number> {
  return (await stat(path)).mode & 0o777
}
