import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { obj, str } from './schema.js'
import { request, respond, type MessageLimits } from './json-messages.js'

/**
 * /farmesh/membership/1.0.0 — the first protocol run on every connection,
 * before any farm protocol: each side proves it belongs to the same site.
 *
 * Public site: the site names must match. Private site: each side also sends
 * HMAC(secret, site | prover | verifier). Noise has already authenticated
 * both peer ids, and the proof is bound to them, so a captured proof is
 * useless to anyone else and the secret never crosses the wire.
 *
 * The dialer asks; the listener verifies, marks the dialer a member, then
 * answers with its own proof, which the dialer verifies in turn.
 */
export const MEMBERSHIP_PROTOCOL = '/farmesh/membership/1.0.0'
export const MEMBERSHIP_LIMITS: MessageLimits = { maxBytes: 1024, timeoutMs: 5_000 }

export interface Hello { site: string, proof: string }
export type HelloReply = { ok: true, site: string, proof: string } | { ok: false, reason: string }

export function proofFor (secret: Uint8Array | undefined, site: string, prover: string, verifier: string): string {
  if (secret == null) return ''
  return createHmac('sha256', secret).update(`farmesh/membership/1|${site}|${prover}|${verifier}`).digest('hex')
}

function sameProof (a: string, b: string): boolean {
  const x = Buffer.from(a); const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

function parseHello (v: unknown): Hello {
  const o = obj(v, 'hello')
  return { site: str(o.site, 'site', 128), proof: str(o.proof, 'proof', 128) }
}

function parseReply (v: unknown): HelloReply {
  const o = obj(v, 'reply')
  if (o.ok === true) return { ok: true, site: str(o.site, 'site', 128), proof: str(o.proof, 'proof', 128) }
  return { ok: false, reason: str(o.reason, 'reason', 256) }
}

export interface MembershipInit {
  site: string
  secret?: Uint8Array
  self: PeerId
}

export class MembershipRefusedError extends Error {
  constructor (message: string) { super(message); this.name = 'MembershipRefusedError' }
}

/** Why a hello from `remote` is refused, or undefined when it is a member. */
export function checkHello (init: MembershipInit, hello: Hello, remote: string): string | undefined {
  if (hello.site !== init.site) return `site ${JSON.stringify(hello.site)} is not ${JSON.stringify(init.site)}`
  const expected = proofFor(init.secret, init.site, remote, init.self.toString())
  if (!sameProof(expected, hello.proof)) return init.secret == null ? 'peer claims a private site; this one is public' : 'membership proof does not match this site\'s secret'
  return undefined
}

/** Listener side. Resolves with the remote's peer id string once admitted. */
export async function handleMembership (init: MembershipInit, stream: Stream, connection: Connection, admit: (peer: string) => void, refuse: (peer: string, reason: string) => void): Promise<void> {
  const remote = connection.remotePeer.toString()
  await respond(stream, parseHello, (hello): HelloReply => {
    const reason = checkHello(init, hello, remote)
    if (reason != null) {
      refuse(remote, reason)
      return { ok: false, reason: 'not a member of this site' }
    }
    admit(remote)
    return { ok: true, site: init.site, proof: proofFor(init.secret, init.site, init.self.toString(), remote) }
  }, MEMBERSHIP_LIMITS)
}

/** Dialer side: throws MembershipRefusedError when either side refuses. */
export async function requestMembership (init: MembershipInit, connection: Connection, signal?: AbortSignal): Promise<void> {
  const remote = connection.remotePeer.toString()
  const hello: Hello = { site: init.site, proof: proofFor(init.secret, init.site, init.self.toString(), remote) }
  const reply = await request(connection, MEMBERSHIP_PROTOCOL, hello, parseReply, MEMBERSHIP_LIMITS, signal)
  if (!reply.ok) throw new MembershipRefusedError(`refused by ${remote}: ${reply.reason}`)
  const reason = checkHello(init, { site: reply.site, proof: reply.proof }, remote)
  if (reason != null) throw new MembershipRefusedError(`${remote} is not a member: ${reason}`)
}
