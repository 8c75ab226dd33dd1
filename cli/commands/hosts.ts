import { connectApi } from '../api-client.js'
import { bytes, shortId, table } from '../format.js'
import type { Command } from '../command.js'

export const hosts: Command = {
  name: 'hosts',
  summary: 'the site\'s resource table: every host, its slots and renderers',
  usage: 'hosts [--data DIR] [--json]',
  options: {},
  async run ({ data, json }, out) {
    const api = await connectApi(data)
    const list = await api.call<any[]>('GET', '/v1/hosts')
    if (json) { out.json(list); return }
    out.print(table(['HOST', 'ID', 'SLOTS', 'RENDERERS', 'LICENSES', 'ROLE'], list.map(h => [
      h.hostname, shortId(h.id), `${h.slots.busy}/${h.slots.total}`,
      h.renderers.map((r: any) => `${r.name} ${r.version}`).join(', '),
      h.licenses.join(',') || '-',
      [h.scheduler ? `scheduler (term ${h.term})` : '', h.render ? '' : 'no-render', h.draining ? 'draining' : '', h.paused != null ? `paused (${h.paused})` : ''].filter(Boolean).join(' ') || '-'
    ])))
  }
}

export const host: Command = {
  name: 'host',
  summary: 'one host\'s full fingerprint and slots',
  usage: 'host ID|HOSTNAME [--data DIR] [--json]',
  options: {},
  positionals: [1, 1],
  async run ({ data, json, positionals }, out) {
    const api = await connectApi(data)
    const h = await api.call('GET', `/v1/hosts/${encodeURIComponent(positionals[0])}`)
    if (json) { out.json(h); return }
    const fp = h.fingerprint
    out.print(`id         ${h.id}`)
    out.print(`hostname   ${h.hostname}   site ${h.site}${h.scheduler ? '   (scheduler)' : ''}`)
    out.print(`machine    ${fp.machine.family} ${fp.machine.type} ${fp.machine.vendor} ${fp.machine.model}`)
    out.print(`os         ${fp.os.family} ${fp.os.type} ${fp.os.version} (${fp.os.release})`)
    out.print(`cpu        ${fp.cpu.count} × ${fp.cpu.model} (${fp.cpu.family}) ${fp.cpu.speedMHz} MHz`)
    out.print(`ram        ${bytes(fp.ram.free)} free of ${bytes(fp.ram.total)}`)
    out.print(`swap       ${bytes(fp.swap.free)} free of ${bytes(fp.swap.total)}`)
    out.print(`gpus       ${fp.gpus.map((g: any) => `${g.vendor} ${g.model}`).join(', ') || 'none'}`)
    out.print(`renderers  ${fp.renderers.map((r: any) => `${r.name} ${r.version}`).join(', ')}`)
    out.print(`licenses   ${fp.licenses.join(', ') || 'none'}`)
    out.print(`slots      ${fp.slots.busy}/${fp.slots.total} busy`)
    out.print(`uptime     ${h.uptimeSec}s, last advert ${(h.lastSeenMsAgo / 1000).toFixed(1)}s ago`)
    for (const a of h.addresses) out.print(`address    ${a}`)
  }
}
