import { connectApi } from '../api-client.js'
import { table } from '../format.js'
import { UsageError } from '../../node/errors.js'
import type { Command } from '../command.js'

export const limits: Command = {
  name: 'limits',
  summary: 'site-wide limits (floating licenses): use and holders; `limits set NAME COUNT` sets one',
  usage: 'limits [set NAME COUNT] [--data DIR] [--json]',
  positionals: [0, 3],
  options: {},
  async run ({ data, json, positionals }, out) {
    const api = await connectApi(data)
    if (positionals.length > 0) {
      if (positionals[0] !== 'set' || positionals.length !== 3) throw new UsageError('limits: usage: farmesh limits set NAME COUNT')
      const count = Number(positionals[2])
      if (!Number.isInteger(count) || count < 0) throw new UsageError(`limits: COUNT must be a whole number of at least 0, got ${JSON.stringify(positionals[2])}`)
      const res = await api.call('POST', '/v1/limits', { name: positionals[1], count })
      if (json) out.json(res)
      else out.print(`limit ${res.name}: ${res.count} (${res.inUse} in use)`)
      return
    }
    const list = await api.call<any[]>('GET', '/v1/limits')
    if (json) { out.json(list); return }
    out.print(table(['LIMIT', 'IN USE', 'HOLDERS'], list.map(l => [l.name, `${l.inUse}/${l.count}`, l.holders.map((h: any) => `${h.job}:${h.frames.join(',')}@…${h.host.slice(-6)}`).join(' ')])))
  }
}

export const nimby: Command = {
  name: 'nimby',
  summary: 'lock (on) or unlock (off) a host by hand: a locked host hands its frames back and takes none',
  usage: 'nimby on|off [HOST] [--data DIR] [--json]',
  positionals: [1, 2],
  options: {},
  async run ({ data, json, positionals }, out) {
    const [mode, host] = positionals
    if (mode !== 'on' && mode !== 'off') throw new UsageError(`nimby: expected on or off, got ${JSON.stringify(mode)}`)
    const api = await connectApi(data)
    const target = host ?? (await api.call('GET', '/v1/status')).peerId
    const res = await api.call('POST', `/v1/hosts/${encodeURIComponent(target)}/nimby-${mode}`, {})
    if (json) out.json(res)
    else out.print(res.locked === true ? 'host locked: it takes no frames' : 'host unlocked')
  }
}
