import { connectApi } from '../api-client.js'
import { table } from '../format.js'
import { UsageError } from '../../node/errors.js'
import type { Command } from '../command.js'

export const site: Command = {
  name: 'site',
  summary: 'this site\'s identity: its id (a fingerprint of its public key) and addresses',
  usage: 'site [--data DIR] [--json]',
  options: {},
  async run ({ data, json }, out) {
    const s = await (await connectApi(data)).call('GET', '/v1/site')
    if (json) { out.json(s); return }
    out.print(`site     ${s.name}`)
    out.print(`site id  ${s.siteId ?? '(not created yet)'}`)
    for (const a of s.addresses) out.print(`address  ${a}`)
  }
}

function duration (text: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h|d)?$/.exec(text)
  if (m == null) throw new UsageError(`--expires: expected a duration like 30m, 1h or 2d, got ${JSON.stringify(text)}`)
  return Number(m[1]) * ({ s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2] ?? 's']
}

const SUB = ['invite', 'join', 'add', 'pending', 'approve', 'list', 'remove']

export const federation: Command = {
  name: 'federation',
  summary: 'join farms of other studios: invite, join TOKEN, add MULTIADDR, pending, approve SITE, list, remove SITE',
  usage: 'federation invite [--expires 1h] | join TOKEN | add MULTIADDR | pending | approve SITE | list | remove SITE  [--data DIR] [--json]',
  positionals: [1, 2],
  options: { expires: { type: 'string' } },
  async run ({ data, json, positionals, values }, out) {
    const [sub, arg] = positionals
    if (!SUB.includes(sub)) throw new UsageError(`federation: unknown action ${JSON.stringify(sub)} (${SUB.join(', ')})`)
    const needsArg = ['join', 'add', 'approve', 'remove'].includes(sub)
    if (needsArg && arg == null) throw new UsageError(`federation ${sub}: missing argument`)
    const api = await connectApi(data)
    switch (sub) {
      case 'invite': {
        const res = await api.call('POST', '/v1/federation/invite', { expiresSec: values.expires != null ? duration(values.expires) : 3600 })
        if (json) { out.json(res); return }
        out.print(`invite valid until ${new Date(res.expiresAt).toISOString()}; give this line to the other site (farmesh federation join TOKEN):`)
        out.print(res.token) // alone on the last line, for scripts
        return
      }
      case 'join':
      case 'add':
      case 'approve':
      case 'remove': {
        const body = sub === 'join' ? { token: arg } : sub === 'add' ? { address: arg } : { site: arg }
        const res = await api.call('POST', `/v1/federation/${sub}`, body)
        if (json) { out.json(res); return }
        if (sub === 'remove') out.print(res.removed === true ? `no longer federated with ${arg}` : `not federated with ${arg}`)
        else out.print(`${res.name} (${res.siteId}): ${res.state === 'asked' ? 'waiting for the other site to approve' : res.state}`)
        return
      }
      default: {
        const list = await api.call<any[]>('GET', sub === 'pending' ? '/v1/federation/pending' : '/v1/federation')
        if (json) { out.json(list); return }
        out.print(table(['SITE', 'ID', 'STATE', 'SINCE', 'ADDRESS'], list.map(s => [s.name, s.siteId, s.state, new Date(s.since).toISOString().slice(0, 19), s.addresses[0] ?? ''])))
      }
    }
  }
}

export const outsource: Command = {
  name: 'outsource',
  summary: 'send a queued job to a federated site (named, or the best offer)',
  usage: 'outsource ID [--site SITE] [--data DIR] [--json]',
  positionals: [1, 1],
  options: { site: { type: 'string' } },
  async run ({ data, json, positionals, values }, out) {
    const res = await (await connectApi(data)).call('POST', `/v1/jobs/${encodeURIComponent(positionals[0])}/outsource`, { site: values.site })
    if (json) out.json(res)
    else out.print(`job ${res.id} outsourced to ${res.outsourcedTo}`)
  }
}
