import {
  createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, timingSafeEqual, type KeyObject
} from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { writeFileAtomic } from './data-dir.js'

/**
 * A site's identity: an Ed25519 key that signs what the site sends (bundles,
 * federation messages) and an X25519 key that bundles are encrypted to. All
 * members of a site hold the same pair, so any of them can act for the site.
 *
 * The site id is a fingerprint of *both* public keys, so a site card or an
 * invite token that names an id together with keys can be checked on its own:
 * nobody can pair a known id with an encryption key of their choosing.
 */

export const SITE_KEYS_FILE = 'site-keys.json'
export const SITE_ID_RE = /^site-[a-z2-7]{32}$/
const KEYSET_PREFIX = 'fmk1.'
const INVITE_PREFIX = 'fmi1.'
const MAX_NAME = 64
const MAX_ADDRESSES = 16
const MAX_ADDRESS_LEN = 512
const MAX_TOKEN_LEN = 8192

export class SiteKeysError extends Error {
  constructor (message: string) { super(message); this.name = 'SiteKeysError' }
}

export class InviteError extends Error {
  /** the token field that is wrong (`token` when it cannot be decoded at all) */
  readonly field: string
  constructor (field: string, message: string) { super(`invite ${field}: ${message}`); this.name = 'InviteError'; this.field = field }
}

export interface SiteKeySet {
  siteId: string
  name: string
  signPrivate: KeyObject
  /** raw 32-byte Ed25519 public key */
  signPublic: Uint8Array
  encPrivate: KeyObject
  /** raw 32-byte X25519 public key */
  encPublic: Uint8Array
}

/** What a site tells others about itself; keys as base64url of the raw 32 bytes. */
export interface SiteCard {
  siteId: string
  name: string
  signPub: string
  encPub: string
}

// ---------------------------------------------------------------- encodings

export function b64url (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url')
}

/** Strict base64url: rejects padding, other alphabets and non-canonical trailing bits. */
export function fromB64url (text: unknown, length?: number): Buffer | undefined {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text)) return undefined
  const buf = Buffer.from(text, 'base64url')
  if (buf.toString('base64url') !== text) return undefined
  if (length !== undefined && buf.byteLength !== length) return undefined
  return buf
}

const B32 = 'abcdefghijklmnopqrstuvwxyz234567'

/** RFC 4648 base32, lowercase, no padding. */
export function base32 (bytes: Uint8Array): string {
  let out = ''; let bits = 0; let value = 0
  for (const b of bytes) {
    value = (value << 8) | b; bits += 8
    while (bits >= 5) { out += B32[(value >>> (bits - 5)) & 31]; bits -= 5 }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31]
  return out
}

// ---------------------------------------------------------------- keys

export function rawPublicKey (key: KeyObject): Uint8Array {
  const jwk = key.export({ format: 'jwk' })
  if (typeof jwk.x !== 'string') throw new SiteKeysError('not an OKP key')
  return Buffer.from(jwk.x, 'base64url')
}

function publicFromRaw (raw: Uint8Array, crv: 'Ed25519' | 'X25519'): KeyObject {
  if (raw.byteLength !== 32) throw new SiteKeysError(`${crv} public key must be 32 bytes`)
  return createPublicKey({ key: { kty: 'OKP', crv, x: b64url(raw) }, format: 'jwk' })
}

export function signPublicKey (raw: Uint8Array): KeyObject { return publicFromRaw(raw, 'Ed25519') }
export function encPublicKey (raw: Uint8Array): KeyObject { return publicFromRaw(raw, 'X25519') }

/** `site-` + base32 of the first 20 bytes of sha256(domain ‖ signPub ‖ encPub). */
export function siteId (signPub: Uint8Array, encPub: Uint8Array): string {
  if (signPub.byteLength !== 32 || encPub.byteLength !== 32) throw new SiteKeysError('public keys must be 32 bytes')
  const h = createHash('sha256').update('farmesh site id v1\0').update(signPub).update(encPub).digest()
  return `site-${base32(h.subarray(0, 20))}`
}

function checkName (name: unknown): string {
  // shown in tables and logs: no control characters, bounded
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME || /[\p{Cc}\p{Cf}]/u.test(name)) {
    throw new SiteKeysError(`site name must be 1-${MAX_NAME} printable characters`)
  }
  return name
}

function fromPrivate (name: string, signPrivate: KeyObject, encPrivate: KeyObject): SiteKeySet {
  if (signPrivate.asymmetricKeyType !== 'ed25519') throw new SiteKeysError('signing key is not Ed25519')
  if (encPrivate.asymmetricKeyType !== 'x25519') throw new SiteKeysError('encryption key is not X25519')
  const signPublic = rawPublicKey(createPublicKey(signPrivate))
  const encPublic = rawPublicKey(createPublicKey(encPrivate))
  return { siteId: siteId(signPublic, encPublic), name: checkName(name), signPrivate, signPublic, encPrivate, encPublic }
}

export function generateSiteKeys (name: string): SiteKeySet {
  return fromPrivate(name, generateKeyPairSync('ed25519').privateKey, generateKeyPairSync('x25519').privateKey)
}

export function publicSiteCard (keys: SiteKeySet): SiteCard {
  return { siteId: keys.siteId, name: keys.name, signPub: b64url(keys.signPublic), encPub: b64url(keys.encPublic) }
}

/** A card received from elsewhere: well-formed, and its id really is its keys' fingerprint. */
export function parseSiteCard (v: unknown): SiteCard & { signPublic: Uint8Array, encPublic: Uint8Array } {
  if (typeof v !== 'object' || v === null) throw new SiteKeysError('site card must be an object')
  const c = v as Record<string, unknown>
  const signPublic = fromB64url(c.signPub, 32)
  const encPublic = fromB64url(c.encPub, 32)
  if (signPublic === undefined || encPublic === undefined) throw new SiteKeysError('site card keys must be 32 bytes, base64url')
  if (typeof c.siteId !== 'string' || c.siteId !== siteId(signPublic, encPublic)) throw new SiteKeysError('site card id does not match its keys')
  return { siteId: c.siteId, name: checkName(c.name), signPub: c.signPub as string, encPub: c.encPub as string, signPublic, encPublic }
}

// ---------------------------------------------------------------- storage and transfer

interface StoredKeys { version: 1, siteId: string, name: string, signPrivate: string, encPrivate: string }

function serialize (keys: SiteKeySet): StoredKeys {
  const der = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'der' }).toString('base64')
  return { version: 1, siteId: keys.siteId, name: keys.name, signPrivate: der(keys.signPrivate), encPrivate: der(keys.encPrivate) }
}

function deserialize (v: unknown): SiteKeySet {
  if (typeof v !== 'object' || v === null) throw new SiteKeysError('key set must be an object')
  const s = v as Record<string, unknown>
  if (s.version !== 1) throw new SiteKeysError(`unsupported key set version ${String(s.version)}`)
  const der = (field: string): KeyObject => {
    const text = s[field]
    if (typeof text !== 'string' || text.length > 1024) throw new SiteKeysError(`${field} missing`)
    try {
      return createPrivateKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'pkcs8' })
    } catch (err) {
      throw new SiteKeysError(`${field} is not a private key (${(err as Error).message})`)
    }
  }
  const keys = fromPrivate(s.name as string, der('signPrivate'), der('encPrivate'))
  // the stored id is redundant: a mismatch means the file was edited or damaged
  if (s.siteId !== keys.siteId) throw new SiteKeysError(`stored site id ${String(s.siteId)} does not match the keys (${keys.siteId})`)
  return keys
}

export async function saveSiteKeys (path: string, keys: SiteKeySet): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(serialize(keys), null, 2) + '\n', 0o600)
}

/** undefined when there is no file; an error when there is one that cannot be used. */
export async function loadSiteKeys (path: string): Promise<SiteKeySet | undefined> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err: any) {
    if (err.code === 'ENOENT') return undefined
    throw new SiteKeysError(`cannot read site keys ${path}: ${err.code ?? err.message}`)
  }
  try {
    return deserialize(JSON.parse(text))
  } catch (err) {
    throw new SiteKeysError(`site keys ${path} are unusable: ${(err as Error).message}`)
  }
}

export async function loadOrCreateSiteKeys (path: string, name: string): Promise<SiteKeySet> {
  const existing = await loadSiteKeys(path)
  if (existing !== undefined) return existing
  const keys = generateSiteKeys(name)
  await saveSiteKeys(path, keys)
  return keys
}

/** The whole key set as one line, for handing to a member joining the site. It is a secret. */
export function exportSiteKeys (keys: SiteKeySet): string {
  return KEYSET_PREFIX + Buffer.from(JSON.stringify(serialize(keys))).toString('base64url')
}

export function importSiteKeys (text: string): SiteKeySet {
  const t = text.trim()
  if (!t.startsWith(KEYSET_PREFIX) || t.length > 8192) throw new SiteKeysError(`not a site key set (expected ${KEYSET_PREFIX}…)`)
  const raw = fromB64url(t.slice(KEYSET_PREFIX.length))
  if (raw === undefined) throw new SiteKeysError('site key set is not valid base64url')
  let json: unknown
  try { json = JSON.parse(raw.toString('utf8')) } catch { throw new SiteKeysError('site key set is not valid JSON') }
  return deserialize(json)
}

// ---------------------------------------------------------------- invite tokens

export interface Invite {
  siteId: string
  name: string
  /** multiaddrs where the inviting site can be reached */
  addresses: string[]
  signPub: string
  encPub: string
  /** 32 random bytes, base64url: proves the joiner was given this token */
  secret: string
  /** ms since the epoch */
  expiresAt: number
}

export interface CreateInviteOptions {
  siteId: string
  name: string
  addresses: string[]
  signPub: string | Uint8Array
  encPub: string | Uint8Array
  expiresAt: number
  /** 32 bytes; random when omitted (read it back with parseInvite) */
  secret?: Uint8Array
}

function keyText (k: string | Uint8Array): string { return typeof k === 'string' ? k : b64url(k) }

function validateInvite (v: unknown, now: number): Invite {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InviteError('token', 'not an object')
  const o = v as Record<string, unknown>
  if (o.v !== 1) throw new InviteError('v', `unsupported version ${String(o.v)}`)
  const signPublic = fromB64url(o.signPub, 32)
  if (signPublic === undefined) throw new InviteError('signPub', 'must be a 32-byte key, base64url')
  const encPublic = fromB64url(o.encPub, 32)
  if (encPublic === undefined) throw new InviteError('encPub', 'must be a 32-byte key, base64url')
  if (typeof o.siteId !== 'string' || !SITE_ID_RE.test(o.siteId)) throw new InviteError('siteId', 'malformed')
  if (o.siteId !== siteId(signPublic, encPublic)) throw new InviteError('siteId', 'does not match the keys')
  try { checkName(o.name) } catch (err) { throw new InviteError('name', (err as Error).message) }
  if (!Array.isArray(o.addresses) || o.addresses.length === 0 || o.addresses.length > MAX_ADDRESSES) {
    throw new InviteError('addresses', `must list 1-${MAX_ADDRESSES} addresses`)
  }
  for (const [i, a] of o.addresses.entries()) {
    if (typeof a !== 'string' || !a.startsWith('/') || a.length > MAX_ADDRESS_LEN || /[\s\p{Cc}]/u.test(a)) {
      throw new InviteError(`addresses[${i}]`, 'must be a multiaddr')
    }
  }
  if (fromB64url(o.secret, 32) === undefined) throw new InviteError('secret', 'must be 32 bytes, base64url')
  if (typeof o.expiresAt !== 'number' || !Number.isSafeInteger(o.expiresAt) || o.expiresAt <= 0) throw new InviteError('expiresAt', 'must be a time in ms')
  if (o.expiresAt <= now) throw new InviteError('expiresAt', `expired at ${new Date(o.expiresAt).toISOString()}`)
  return {
    siteId: o.siteId, name: o.name as string, addresses: [...o.addresses] as string[], signPub: o.signPub as string,
    encPub: o.encPub as string, secret: o.secret as string, expiresAt: o.expiresAt
  }
}

/** A one-line token: `fmi1.` + base64url(JSON). Carries a secret: hand it over privately. */
export function createInvite (opts: CreateInviteOptions): string {
  const secret = opts.secret ?? randomBytes(32)
  const body = {
    v: 1,
    siteId: opts.siteId,
    name: opts.name,
    addresses: opts.addresses,
    signPub: keyText(opts.signPub),
    encPub: keyText(opts.encPub),
    secret: b64url(secret),
    expiresAt: opts.expiresAt
  }
  // validate what we emit with the reader's rules: a token we print always parses
  validateInvite(body, -Infinity)
  return INVITE_PREFIX + Buffer.from(JSON.stringify(body)).toString('base64url')
}

export function parseInvite (token: string, opts: { now?: number } = {}): Invite {
  if (typeof token !== 'string') throw new InviteError('token', 'must be a string')
  const t = token.trim()
  if (t.length > MAX_TOKEN_LEN) throw new InviteError('token', 'too long')
  if (!t.startsWith(INVITE_PREFIX)) throw new InviteError('token', `must start with ${INVITE_PREFIX}`)
  const raw = fromB64url(t.slice(INVITE_PREFIX.length))
  if (raw === undefined) throw new InviteError('token', 'is not valid base64url')
  let json: unknown
  try { json = JSON.parse(raw.toString('utf8')) } catch { throw new InviteError('token', 'is not valid JSON') }
  return validateInvite(json, opts.now ?? Date.now())
}

/** Constant-time comparison of two secrets of any length. */
export function secretsEqual (a: Uint8Array, b: Uint8Array): boolean {
  const ha = createHash('sha256').update(a).digest()
  const hb = createHash('sha256').update(b).digest()
  return timingSafeEqual(ha, hb)
}
