import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { writeFileAtomic } from './data-dir.js'
import { b64url, createInvite, fromB64url, InviteError, secretsEqual, type SiteCard } from './site-keys.js'

/**
 * The inviter's side of invite tokens: each one-time secret it handed out,
 * until a joining site presents it (consumed, never accepted twice) or it
 * expires. One JSON file, mode 0600, rewritten atomically; operations are
 * serialized so two joins racing for one secret cannot both win.
 */

export const INVITES_FILE = 'invites.json'
const MAX_PENDING = 1000

export interface PendingInvite {
  /** short public handle (hash of the secret) for listing and revoking */
  id: string
  createdAt: number
  expiresAt: number
  note?: string
}

interface StoredInvite extends PendingInvite { secret: string }
interface InvitesFile { version: 1, invites: StoredInvite[] }

export function inviteId (secret: Uint8Array): string {
  return createHash('sha256').update('farmesh invite id\0').update(secret).digest('hex').slice(0, 16)
}

function publicView ({ secret: _secret, ...rest }: StoredInvite): PendingInvite { return rest }

export class PendingInvites {
  private queue: Promise<unknown> = Promise.resolve()
  private readonly now: () => number

  constructor (readonly path: string, opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now
  }

  /** Create a secret, remember it, and return the token that carries it. */
  async issue (card: SiteCard, addresses: string[], ttlMs: number, note?: string): Promise<{ token: string, invite: PendingInvite }> {
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError('invite lifetime must be positive')
    const secret = randomBytes(32)
    const expiresAt = Math.floor(this.now() + ttlMs)
    // build the token first: an invalid card or address list fails before anything is stored
    const token = createInvite({ ...card, addresses, expiresAt, secret })
    const invite = await this.add({ secret, expiresAt, note })
    return { token, invite }
  }

  async add (entry: { secret: Uint8Array, expiresAt: number, note?: string }): Promise<PendingInvite> {
    if (entry.secret.byteLength !== 32) throw new InviteError('secret', 'must be 32 bytes')
    return await this.locked(async file => {
      const now = this.now()
      file.invites = file.invites.filter(i => i.expiresAt > now)
      if (file.invites.length >= MAX_PENDING) throw new InviteError('token', `too many pending invites (${MAX_PENDING}); revoke some`)
      const stored: StoredInvite = {
        id: inviteId(entry.secret), secret: b64url(entry.secret), createdAt: now, expiresAt: entry.expiresAt,
        ...(entry.note !== undefined ? { note: entry.note.slice(0, 200) } : {})
      }
      file.invites.push(stored)
      return { result: publicView(stored), write: true }
    })
  }

  /**
   * Accept a presented secret once. Throws InviteError('secret') when it is
   * unknown or already used and InviteError('expiresAt') when it expired.
   */
  async consume (secret: Uint8Array): Promise<PendingInvite> {
    return await this.locked(async file => {
      const now = this.now()
      const i = file.invites.findIndex(inv => secretsEqual(fromB64url(inv.secret) ?? Buffer.alloc(0), secret))
      if (i < 0) throw new InviteError('secret', 'unknown or already used')
      const [found] = file.invites.splice(i, 1)
      // an expired secret is removed too (it can never become valid again)
      if (found.expiresAt <= now) return { error: new InviteError('expiresAt', 'expired'), write: true }
      return { result: publicView(found), write: true }
    })
  }

  async list (): Promise<PendingInvite[]> {
    return await this.locked(async file => {
      const now = this.now()
      return { result: file.invites.filter(i => i.expiresAt > now).map(publicView), write: false }
    })
  }

  async revoke (id: string): Promise<boolean> {
    return await this.locked(async file => {
      const before = file.invites.length
      file.invites = file.invites.filter(i => i.id !== id)
      return { result: file.invites.length !== before, write: file.invites.length !== before }
    })
  }

  /** Drop expired invites; returns how many. */
  async prune (): Promise<number> {
    return await this.locked(async file => {
      const now = this.now()
      const before = file.invites.length
      file.invites = file.invites.filter(i => i.expiresAt > now)
      const removed = before - file.invites.length
      return { result: removed, write: removed > 0 }
    })
  }

  private async read (): Promise<InvitesFile> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err: any) {
      if (err.code === 'ENOENT') return { version: 1, invites: [] }
      throw err
    }
    const parsed = JSON.parse(text) as InvitesFile
    if (parsed?.version !== 1 || !Array.isArray(parsed.invites)) throw new Error(`invites file ${this.path} is malformed`)
    return parsed
  }

  /** Run one read-modify-write at a time; an `error` result is thrown after the write. */
  private async locked<T> (fn: (file: InvitesFile) => Promise<{ result?: T, error?: Error, write: boolean }>): Promise<T> {
    const run = this.queue.then(async () => {
      const file = await this.read()
      const out = await fn(file)
      if (out.write) await writeFileAtomic(this.path, JSON.stringify(file, null, 2) + '\n', 0o600)
      if (out.error !== undefined) throw out.error
      return out.result as T
    })
    this.queue = run.catch(() => {})
    return await run
  }
}
