import { createHash } from 'node:crypto'
import { networkInterfaces } from 'node:os'
import { EventEmitter } from 'node:events'
import makeMdns from 'multicast-dns'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { ConfigError } from './errors.js'

/**
 * Zero-config discovery of the hosts of one site on a LAN, speaking the same
 * mDNS records as @libp2p/mdns (PTR → TXT `dnsaddr=<multiaddr>/p2p/<id>`).
 * Our own module because @libp2p/mdns cannot be limited to one interface, and
 * a node must never multicast on an interface the operator did not choose.
 *
 * The service name carries a hash of the site name, so hosts of other sites
 * on the same LAN never even reach the membership handshake.
 */
export interface MdnsInit {
  site: string
  peerId: string
  /** multiaddrs (with /p2p/) to announce */
  addresses: () => string[]
  /** restrict to this interface name (`eth0`, `lo`); all interfaces when unset */
  interface?: string
  intervalMs?: number
  port?: number
}

export interface Discovered { peerId: string, multiaddrs: Multiaddr[] }

export function serviceName (site: string): string {
  const h = createHash('sha256').update(site).digest('hex').slice(0, 16)
  return `_farmesh-${h}._udp.local`
}

export function interfaceAddress (name: string): string {
  const addrs = networkInterfaces()[name]
  const v4 = addrs?.find(a => a.family === 'IPv4')
  if (v4 == null) throw new ConfigError(`mdns-interface: no IPv4 address on interface ${JSON.stringify(name)}`)
  return v4.address
}

export class MdnsDiscovery extends EventEmitter<{ peer: [Discovered] }> {
  private mdns?: ReturnType<typeof makeMdns>
  private timers: NodeJS.Timeout[] = []
  private readonly service: string

  constructor (private readonly init: MdnsInit) {
    super()
    this.service = serviceName(init.site)
  }

  start (): void {
    const opts: makeMdns.Options = { port: this.init.port ?? 5353, reuseAddr: true, loopback: true }
    if (this.init.interface != null) {
      opts.interface = interfaceAddress(this.init.interface)
      // binding to the interface's unicast address would never receive multicast
      opts.bind = '0.0.0.0'
    }
    const mdns = makeMdns(opts)
    this.mdns = mdns
    mdns.on('query', (q) => {
      if (q.questions.some(x => x.name === this.service)) this.announce()
    })
    mdns.on('response', (res) => { this.onResponse(res) })
    mdns.on('error', () => {})
    mdns.on('warning', () => {})
    // A burst of queries at start makes a new host appear within a second or
    // two even when one packet is lost; then a slow steady rate.
    for (const delay of [0, 300, 1000]) this.timers.push(setTimeout(() => { this.query(); this.announce() }, delay))
    const every = setInterval(() => { this.query() }, this.init.intervalMs ?? 5_000)
    every.unref()
    this.timers.push(every)
  }

  stop (): void {
    for (const t of this.timers) clearTimeout(t)
    this.timers = []
    this.mdns?.destroy()
    this.mdns = undefined
  }

  query (): void {
    this.mdns?.query({ questions: [{ name: this.service, type: 'PTR' }] })
  }

  /** Unsolicited answer: peers learn of us without waiting for their next query. */
  announce (): void {
    const addrs = this.init.addresses().filter(a => a.includes('/p2p/') && a.length < 250)
    if (this.mdns == null || addrs.length === 0) return
    const instance = `${this.init.peerId.slice(-32)}.${this.service}`
    this.mdns.respond({
      answers: [{ name: this.service, type: 'PTR', ttl: 120, data: instance }],
      additionals: [{ name: instance, type: 'TXT', ttl: 120, data: addrs.map(a => `dnsaddr=${a}`) }]
    })
  }

  private onResponse (res: { answers: any[], additionals: any[] }): void {
    const records = [...(res.answers ?? []), ...(res.additionals ?? [])]
    if (!records.some(r => r.type === 'PTR' && r.name === this.service)) return
    const byPeer = new Map<string, Multiaddr[]>()
    for (const r of records) {
      if (r.type !== 'TXT' || !String(r.name).endsWith(this.service)) continue
      for (const chunk of [r.data].flat()) {
        const text = Buffer.isBuffer(chunk) ? chunk.toString() : String(chunk)
        if (!text.startsWith('dnsaddr=')) continue
        try {
          const ma = multiaddr(text.slice('dnsaddr='.length))
          const peer = ma.getComponents().find(c => c.name === 'p2p')?.value
          if (peer == null || peer === this.init.peerId) continue
          byPeer.set(peer, [...(byPeer.get(peer) ?? []), ma])
        } catch {}
      }
    }
    for (const [peerId, multiaddrs] of byPeer) this.emit('peer', { peerId, multiaddrs })
  }
}
