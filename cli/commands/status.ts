import { connectApi } from '../api-client.js'
import type { Command } from '../command.js'

export const status: Command = {
  name: 'status',
  summary: 'this node: peer id, site, addresses, peers, slots, scheduler',
  usage: 'status [--data DIR] [--json]',
  options: {},
  async run ({ data, json }, out) {
    const api = await connectApi(data)
    const s = await api.call('GET', '/v1/status')
    if (json) { out.json(s); return }
    out.print(`peer id    ${s.peerId}`)
    out.print(`hostname   ${s.hostname}`)
    out.print(`site       ${s.site}`)
    out.print(`slots      ${s.slots.busy}/${s.slots.total} busy`)
    out.print(`scheduler  ${s.scheduler ?? 'none'}${s.scheduler === s.peerId ? ' (this node)' : ''}${s.scheduler != null ? ` term ${s.term}` : ''}`)
    out.print(`hosts      ${s.hosts} in the site, ${s.peers.length} connected peers`)
    out.print(`api        ${s.api}`)
    for (const a of s.addresses) out.print(`address    ${a}`)
  }
}
