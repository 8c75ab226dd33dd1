import type { Connection, Stream } from '@libp2p/interface'
import { sign, verify } from 'node:crypto'
import { arr, int, num, obj, oneOf, optStr, str } from './schema.js'
import type { MessageLimits } from './json-messages.js'
import { callRpc, serveRpc } from './rpc.js'
import { parseSiteCard, signPublicKey, type SiteCard, type SiteKeySet } from '../storage/site-keys.js'

/**
 * Federation between sites (the patent's remote sites, FIGURES 11–17).
 *
 * /farmesh/federation-hello/1.0.0 — the only federation protocol any peer may
 * open: a site proves it holds its site key (a signature bound to both peer
 * ids, so it cannot be replayed by anyone else), and either presents an
 * invite secret (`join`), asks to be approved (`add`), answers an approval
 * (`approved`), or, already federated, opens a session (`hello`).
 *
 * /farmesh/federation/1.0.0 — everything else between federated sites
 * (offers, dedup queries, frame states, billing, kill, removal). Its handler
 * refuses any peer that has not completed a hello, before reading a byte.
 */
export const HELLO_PROTOCOL = '/farmesh/federation-hello/1.0.0'
export const FEDERATION_PROTOCOL = '/farmesh/federation/1.0.0'
export const HELLO_LIMITS: MessageLimits = { maxBytes: 8 * 1024, timeoutMs: 10_000 }
export const FEDERATION_LIMITS: MessageLimits = { maxBytes: 4 * 1024 * 1024, timeoutMs: 30_000 }

export interface HelloRequest { op: 'hello' | 'join' | 'add' | 'approved', card: SiteCard, proof: string, addresses: string[], secret?: string }
export interface HelloReply { card: SiteCard, proof: string, addresses: string[], state: 'active' | 'pending' }

export function proofText (prover: string, verifier: string): string {
  return `farmesh/federation/1|${prover}|${verifier}`
}

export function makeProof (keys: SiteKeySet, prover: string, verifier: string): string {
  return sign(null, Buffer.from(proofText(prover, verifier)), keys.signPrivate).toString('base64url')
}

/** Does `proof` show that `prover`'s connection speaks for the site of `card`? */
export function checkProof (card: SiteCard, proof: string, prover: string, verifier: string): boolean {
  try {
    const parsed = parseSiteCard(card)
    return verify(null, Buffer.from(proofText(prover, verifier)), signPublicKey(parsed.signPublic), Buffer.from(proof, 'base64url'))
  } catch {
    return false
  }
}

const addrs = (v: unknown, f: string): string[] => arr(v, f, 16, (x, g) => str(x, g, 512))

export function parseHello (v: unknown): HelloRequest {
  const o = obj(v, 'hello')
  const card = parseSiteCard(o.card)
  return {
    op: oneOf(o.op, 'op', ['hello', 'join', 'add', 'approved'] as const),
    card: { siteId: card.siteId, name: card.name, signPub: card.signPub, encPub: card.encPub },
    proof: str(o.proof, 'proof', 200),
    addresses: addrs(o.addresses, 'addresses'),
    secret: optStr(o.secret, 'secret', 100)
  }
}

function parseHelloReply (v: unknown): HelloReply {
  const o = obj(v, 'reply')
  const card = parseSiteCard(o.card)
  return { card: { siteId: card.siteId, name: card.name, signPub: card.signPub, encPub: card.encPub }, proof: str(o.proof, 'proof', 200), addresses: addrs(o.addresses, 'addresses'), state: oneOf(o.state, 'state', ['active', 'pending'] as const) }
}

export async function callHello (connection: Connection, req: HelloRequest, signal?: AbortSignal): Promise<HelloReply> {
  return parseHelloReply(await callRpc(connection, HELLO_PROTOCOL, req, HELLO_LIMITS, signal))
}

export async function serveHello (stream: Stream, answer: (req: HelloRequest) => Promise<HelloReply>): Promise<void> {
  await serveRpc(stream, parseHello, answer, HELLO_LIMITS)
}

// ---------------------------------------------------------------- between federated sites

export interface FrameUpdate { frame: number, state: 'queued' | 'running' | 'done' | 'failed', host: string | null, attempts: number, progress: number, logTail?: string[] }
export const MAX_LOG_LINES = 20
const MAX_LOG_LINE = 1000
export interface BillingLine { host: string, frames: number, wallSeconds: number, cpuSeconds: number }

export type FederationRequest =
  | { op: 'offer', renderer: string, requirements: string[], frames: number }
  | { op: 'have', hashes: string[] }
  | { op: 'received', jobId: string, nonce: string }
  | { op: 'frames', jobId: string, frames: FrameUpdate[] }
  | { op: 'finished', jobId: string, state: 'done' | 'failed' | 'killed', reason?: string, billing: { hosts: BillingLine[], bytesReceived: number, bytesSent: number, frames: number } }
  | { op: 'kill', jobId: string }
  | { op: 'remove' }

export interface Offer { canRun: boolean, reason?: string, freeSlots: number, matchingHosts: number, estimateSec: number }

const jobIdOf = (v: unknown, f: string): string => {
  const s = str(v, f, 128)
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(s)) throw new Error(`${f}: malformed job id`)
  return s
}

export function parseFederationRequest (v: unknown): FederationRequest {
  const o = obj(v, 'request')
  const op = oneOf(o.op, 'op', ['offer', 'have', 'received', 'frames', 'finished', 'kill', 'remove'] as const)
  switch (op) {
    case 'offer': return { op, renderer: str(o.renderer, 'renderer', 32), requirements: arr(o.requirements, 'requirements', 100, (x, f) => str(x, f, 512)), frames: int(o.frames, 'frames', 1, 1_000_000) }
    case 'have': return { op, hashes: arr(o.hashes, 'hashes', 100_000, (x, f) => { const h = str(x, f, 64); if (!/^[0-9a-f]{64}$/.test(h)) throw new Error(`${f}: not a hash`); return h }) }
    case 'received': return { op, jobId: jobIdOf(o.jobId, 'jobId'), nonce: str(o.nonce, 'nonce', 128) }
    case 'frames': return {
      op,
      jobId: jobIdOf(o.jobId, 'jobId'),
      frames: arr(o.frames, 'frames', 100_000, (x, f) => {
        const u = obj(x, f)
        return {
          frame: int(u.frame, `${f}.frame`), state: oneOf(u.state, `${f}.state`, ['queued', 'running', 'done', 'failed'] as const), host: optStr(u.host, `${f}.host`, 128) ?? null, attempts: int(u.attempts, `${f}.attempts`), progress: num(u.progress, `${f}.progress`, 0, 1),
          ...(u.logTail === undefined ? {} : { logTail: arr(u.logTail, `${f}.logTail`, MAX_LOG_LINES, (x, g) => str(x, g, MAX_LOG_LINE)) })
        }
      })
    }
    case 'finished': {
      const b = obj(o.billing, 'billing')
      return {
        op,
        jobId: jobIdOf(o.jobId, 'jobId'),
        state: oneOf(o.state, 'state', ['done', 'failed', 'killed'] as const),
        reason: optStr(o.reason, 'reason', 4096),
        billing: {
          hosts: arr(b.hosts, 'billing.hosts', 10_000, (x, f) => { const h = obj(x, f); return { host: str(h.host, `${f}.host`, 128), frames: int(h.frames, `${f}.frames`), wallSeconds: num(h.wallSeconds, `${f}.wallSeconds`, 0), cpuSeconds: num(h.cpuSeconds, `${f}.cpuSeconds`, 0) } }),
          bytesReceived: int(b.bytesReceived, 'billing.bytesReceived'),
          bytesSent: int(b.bytesSent, 'billing.bytesSent'),
          frames: int(b.frames, 'billing.frames')
        }
      }
    }
    case 'kill': return { op, jobId: jobIdOf(o.jobId, 'jobId') }
    case 'remove': return { op }
  }
}

export async function callFederation<T> (connection: Connection, req: FederationRequest, signal?: AbortSignal): Promise<T> {
  return await callRpc<T>(connection, FEDERATION_PROTOCOL, req, FEDERATION_LIMITS, signal)
}

export async function serveFederation (stream: Stream, answer: (req: FederationRequest) => Promise<unknown>): Promise<void> {
  await serveRpc(stream, parseFederationRequest, answer, FEDERATION_LIMITS)
}
