import type { Connection, Stream } from '@libp2p/interface'
import { arr, int, obj, oneOf, str } from './schema.js'
import type { MessageLimits } from './json-messages.js'
import { callRpc, serveRpc } from './rpc.js'
import { parseSiteCard } from '../storage/site-keys.js'
import type { FederatedSite } from '../storage/federation-store.js'

/**
 * /farmesh/federation-sync/1.0.0 — members of one site exchange the list of
 * sites they federate with, so every host knows them (a job submitted on any
 * host can go out, any host can take a bundle in), not only the one that ran
 * `federation join`. Members only, like the site keys: the request carries
 * the caller's records, the reply the callee's, and both sides merge
 * (newest `since` per site wins). Nonces of accepted bundles stay local.
 */
export const FEDERATION_SYNC_PROTOCOL = '/farmesh/federation-sync/1.0.0'
const MAX_SITES = 1_000
const LIMITS: MessageLimits = { maxBytes: 1024 * 1024, timeoutMs: 5_000 }
const STATES = ['active', 'asked', 'pending', 'removed'] as const

export function parseFederatedSite (v: unknown, field: string): FederatedSite {
  const o = obj(v, field)
  let card
  try { card = parseSiteCard(o) } catch (err: any) { throw new Error(`${field}: ${err.message}`) }
  return {
    siteId: card.siteId,
    name: card.name,
    signPub: card.signPub,
    encPub: card.encPub,
    addresses: arr(o.addresses, `${field}.addresses`, 16, (x, f) => str(x, f, 512)),
    state: oneOf(o.state, `${field}.state`, STATES),
    since: int(o.since, `${field}.since`)
  }
}

function parseSites (v: unknown, field: string): FederatedSite[] {
  return arr(obj(v, field).sites, `${field}.sites`, MAX_SITES, parseFederatedSite)
}

export async function exchangeFederation (connection: Connection, mine: FederatedSite[], signal?: AbortSignal): Promise<FederatedSite[]> {
  const res = await callRpc<unknown>(connection, FEDERATION_SYNC_PROTOCOL, { op: 'sync', sites: mine }, LIMITS, signal)
  return parseSites(res, 'reply')
}

export async function serveFederationSync (stream: Stream, merge: (theirs: FederatedSite[]) => Promise<FederatedSite[]>): Promise<void> {
  await serveRpc(stream, (v) => parseSites(v, 'request'), async (theirs) => ({ sites: await merge(theirs) }), LIMITS)
}
