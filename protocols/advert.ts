import type { Connection, Stream } from '@libp2p/interface'
import type { Fingerprint } from '../node/fingerprint-types.js'
import { arr, bool, int, num, obj, str } from './schema.js'
import { JsonStream, timeoutSignal, type MessageLimits } from './json-messages.js'

/**
 * /farmesh/advert/1.0.0 — a node pushes its advert (fingerprint, slots,
 * roles, addresses) to every member of its site: at once when anything
 * changes, and as a heartbeat every HEARTBEAT_MS so silent hosts expire.
 * One message per stream, no reply: adverts are idempotent and the next
 * heartbeat repairs any loss.
 */
export const ADVERT_PROTOCOL = '/farmesh/advert/1.0.0'
export const ADVERT_LIMITS: MessageLimits = { maxBytes: 64 * 1024, timeoutMs: 5_000 }

export interface Advert {
  peerId: string
  site: string
  /** random per process start: tells a restart from a late message */
  bootId: string
  /** grows with every change within one boot */
  seq: number
  startedAt: number
  addresses: string[]
  roles: { render: boolean, schedule: boolean }
  fingerprint: Fingerprint
  /** set in the last advert of a node that stops cleanly */
  leaving: boolean
  /** the highest scheduler term this node has seen */
  term: number
  /** this node claims the scheduler role in `term` */
  claim?: boolean
  /** takes no new frames now, and why: `nimby` (its user is at it), `asleep` (sleep schedule) */
  paused?: string
  draining?: boolean
  /** addresses of the other members this node is connected to: peer exchange, so a site connected through one `--peer` becomes a full mesh */
  known?: string[]
}

const pos = (v: unknown, f: string): number => num(v, f, 0)

function parseFingerprint (v: unknown): Fingerprint {
  const o = obj(v, 'fingerprint')
  const m = obj(o.machine, 'fingerprint.machine')
  const os = obj(o.os, 'fingerprint.os')
  const cpu = obj(o.cpu, 'fingerprint.cpu')
  const ram = obj(o.ram, 'fingerprint.ram')
  const swap = obj(o.swap, 'fingerprint.swap')
  const slots = obj(o.slots, 'fingerprint.slots')
  return {
    hostname: str(o.hostname, 'fingerprint.hostname', 255),
    machine: { family: str(m.family, 'machine.family'), type: str(m.type, 'machine.type'), vendor: str(m.vendor, 'machine.vendor'), model: str(m.model, 'machine.model') },
    os: { family: str(os.family, 'os.family'), type: str(os.type, 'os.type'), version: str(os.version, 'os.version'), release: str(os.release, 'os.release') },
    cpu: { count: int(cpu.count, 'cpu.count', 0, 100_000), family: str(cpu.family, 'cpu.family'), model: str(cpu.model, 'cpu.model'), speedMHz: pos(cpu.speedMHz, 'cpu.speedMHz') },
    ram: { total: pos(ram.total, 'ram.total'), free: pos(ram.free, 'ram.free') },
    swap: { total: pos(swap.total, 'swap.total'), free: pos(swap.free, 'swap.free') },
    gpus: arr(o.gpus, 'fingerprint.gpus', 64, (g, f) => { const x = obj(g, f); return { vendor: str(x.vendor, `${f}.vendor`), model: str(x.model, `${f}.model`) } }),
    renderers: arr(o.renderers, 'fingerprint.renderers', 64, (r, f) => { const x = obj(r, f); return { name: str(x.name, `${f}.name`, 64), version: str(x.version, `${f}.version`, 128) } }),
    licenses: arr(o.licenses, 'fingerprint.licenses', 1024, (l, f) => str(l, f, 128)),
    slots: { total: int(slots.total, 'slots.total', 0, 100_000), busy: int(slots.busy, 'slots.busy', 0, 100_000) }
  }
}

export function parseAdvert (v: unknown): Advert {
  const o = obj(v, 'advert')
  const roles = obj(o.roles, 'roles')
  return {
    peerId: str(o.peerId, 'peerId', 128),
    site: str(o.site, 'site', 128),
    bootId: str(o.bootId, 'bootId', 64),
    seq: int(o.seq, 'seq'),
    startedAt: int(o.startedAt, 'startedAt'),
    addresses: arr(o.addresses, 'addresses', 64, (a, f) => str(a, f, 512)),
    roles: { render: bool(roles.render, 'roles.render'), schedule: bool(roles.schedule, 'roles.schedule') },
    fingerprint: parseFingerprint(o.fingerprint),
    leaving: bool(o.leaving, 'leaving'),
    term: int(o.term, 'term'),
    claim: o.claim === undefined ? undefined : bool(o.claim, 'claim'),
    paused: o.paused === undefined || o.paused === null ? undefined : str(o.paused, 'paused', 64),
    draining: o.draining === undefined ? undefined : bool(o.draining, 'draining'),
    known: o.known === undefined ? undefined : arr(o.known, 'known', 256, (a, f) => str(a, f, 512)),
  }
}

export async function sendAdvert (connection: Connection, advert: Advert, signal?: AbortSignal): Promise<void> {
  const sig = timeoutSignal(ADVERT_LIMITS.timeoutMs, signal)
  const stream = await connection.newStream(ADVERT_PROTOCOL, { signal: sig, negotiateFully: false })
  try {
    await new JsonStream(stream, ADVERT_LIMITS).write(advert, sig)
    await stream.close({ signal: sig })
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

export async function receiveAdvert (stream: Stream): Promise<Advert> {
  const signal = timeoutSignal(ADVERT_LIMITS.timeoutMs)
  const advert = await new JsonStream(stream, ADVERT_LIMITS).read(parseAdvert, signal)
  await stream.close({ signal }).catch(() => {})
  return advert
}
