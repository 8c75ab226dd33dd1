import type { Connection, Stream } from '@libp2p/interface'
import { obj, optStr } from './schema.js'
import type { MessageLimits } from './json-messages.js'
import { callRpc, serveRpc } from './rpc.js'

/**
 * /farmesh/site-keys/1.0.0 — a member without the site's key pair asks one
 * that has it. Members only (the site's own trust boundary): the keys are
 * what other sites federate with, shared by every host of the site.
 */
export const SITE_KEYS_PROTOCOL = '/farmesh/site-keys/1.0.0'
const LIMITS: MessageLimits = { maxBytes: 16 * 1024, timeoutMs: 5_000 }

export async function askSiteKeys (connection: Connection): Promise<string | undefined> {
  const res = await callRpc<{ keys?: string }>(connection, SITE_KEYS_PROTOCOL, { op: 'keys' }, LIMITS)
  return typeof res?.keys === 'string' ? res.keys : undefined
}

export async function serveSiteKeys (stream: Stream, keys: () => string | undefined): Promise<void> {
  await serveRpc(stream, (v) => { optStr(obj(v, 'request').op, 'op'); return v }, async () => ({ keys: keys() }), LIMITS)
}
