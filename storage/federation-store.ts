import { readFile } from 'node:fs/promises'
import { writeFileAtomic } from './data-dir.js'

/**
 * The sites this one is federated with, in `federation.json` (mode 0600) on
 * every member of the site: the node that joins, invites or approves makes
 * the change, and members exchange their lists (newest `since` wins, see
 * `merge`). Only an `active` site may offer, push or receive anything;
 * `asked` is a request we sent that waits for the other side's approval,
 * `pending` one we received, `removed` a tombstone, so that a removal
 * spreads to the members instead of being undone by them.
 */
export type FederationState = 'active' | 'asked' | 'pending' | 'removed'

export interface FederatedSite {
  siteId: string
  name: string
  signPub: string
  encPub: string
  addresses: string[]
  state: FederationState
  since: number
  /** nonces of bundles already accepted from this site (replay protection) */
  nonces?: string[]
}

const MAX_NONCES = 10_000

export class FederationStore {
  private lock: Promise<unknown> = Promise.resolve()

  constructor (private readonly path: string) {}

  private async read (): Promise<FederatedSite[]> {
    try {
      const parsed = JSON.parse(await readFile(this.path, 'utf8'))
      return Array.isArray(parsed?.sites) ? parsed.sites : []
    } catch (err: any) {
      if (err.code === 'ENOENT') return []
      throw new Error(`federation file ${this.path} is unreadable: ${err.message}`)
    }
  }

  private async change<T> (fn: (sites: FederatedSite[]) => T): Promise<T> {
    const run = async (): Promise<T> => {
      const sites = await this.read()
      const out = fn(sites)
      await writeFileAtomic(this.path, JSON.stringify({ version: 1, sites }, null, 1))
      return out
    }
    const p = this.lock.then(run, run)
    this.lock = p.catch(() => {})
    return await p
  }

  /** The sites, removed ones left out. */
  async list (): Promise<FederatedSite[]> { return (await this.read()).filter(s => s.state !== 'removed') }

  /** Every record, tombstones included, without the nonces: what members exchange. */
  async records (): Promise<FederatedSite[]> { return (await this.read()).map(({ nonces, ...rest }) => rest) }

  /** By site id or name; undefined when unknown or removed. */
  async find (idOrName: string): Promise<FederatedSite | undefined> {
    const sites = await this.list()
    return sites.find(s => s.siteId === idOrName) ?? sites.find(s => s.name === idOrName)
  }

  /**
   * Another member's records: for each site, the one changed last wins
   * (`since`). Returns the sites whose record changed here.
   */
  async merge (incoming: FederatedSite[]): Promise<FederatedSite[]> {
    return await this.change(sites => {
      const changed: FederatedSite[] = []
      for (const r of incoming) {
        const i = sites.findIndex(s => s.siteId === r.siteId)
        if (i >= 0 && sites[i].since >= r.since) continue
        const { nonces: _ignored, ...record } = r
        if (i >= 0) sites[i] = { ...record, nonces: sites[i].nonces }
        else sites.push(record)
        changed.push(record)
      }
      return changed
    })
  }

  async put (site: FederatedSite): Promise<void> {
    await this.change(sites => {
      const i = sites.findIndex(s => s.siteId === site.siteId)
      if (i >= 0) sites[i] = { ...sites[i], ...site, nonces: sites[i].nonces }
      else sites.push(site)
    })
  }

  /** Leaves a tombstone (see the top): false when the site was not federated. */
  async remove (siteId: string): Promise<boolean> {
    return await this.change(sites => {
      const s = sites.find(x => x.siteId === siteId && x.state !== 'removed')
      if (s == null) return false
      Object.assign(s, { state: 'removed', addresses: [], since: Math.max(Date.now(), s.since + 1) })
      return true
    })
  }

  /** Record a bundle nonce; false when it was seen before (a replay). */
  async useNonce (siteId: string, nonce: string): Promise<boolean> {
    return await this.change(sites => {
      const s = sites.find(x => x.siteId === siteId)
      if (s == null) return false
      s.nonces = s.nonces ?? []
      if (s.nonces.includes(nonce)) return false
      s.nonces.push(nonce)
      if (s.nonces.length > MAX_NONCES) s.nonces.splice(0, s.nonces.length - MAX_NONCES)
      return true
    })
  }

  async seenNonce (siteId: string, nonce: string): Promise<boolean> {
    return (await this.find(siteId))?.nonces?.includes(nonce) === true
  }
}
