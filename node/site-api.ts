import { ApiError } from './errors.js'
import { hostDetail, hostSummary } from './host-views.js'
import type { ApiServer } from './api-server.js'
import type { FarmNode } from './farm-node.js'

/** API routes about the node and its site: status, hosts, one host, stop. */
export function registerSiteRoutes (api: ApiServer, node: FarmNode): void {
  api.route('GET', '/v1/status', () => {
    const self = node.advertiser.current()
    return {
      peerId: node.peerId,
      site: node.opts.site,
      hostname: self.fingerprint.hostname,
      addresses: node.libp2p.getMultiaddrs().map(a => a.toString()),
      peers: node.membership.list(),
      slots: self.fingerprint.slots,
      scheduler: node.schedulerId(),
      term: node.schedulerTerm(),
      hosts: node.table.size,
      api: node.api.url
    }
  })
  api.route('GET', '/v1/hosts', () => {
    const sched = node.schedulerId()
    return node.table.entries().map(e => hostSummary(e, sched)).sort((a, b) => a.hostname.localeCompare(b.hostname) || a.id.localeCompare(b.id))
  })
  api.route('GET', '/v1/hosts/:id', ({ params }) => {
    const entry = node.table.get(params.id) ?? node.table.entries().find(e => e.advert.fingerprint.hostname === params.id)
    if (entry == null) throw new ApiError(`no host ${params.id} in this site`, 404)
    return hostDetail(entry, node.schedulerId())
  })
  api.route('POST', '/v1/stop', () => {
    setTimeout(() => { process.kill(process.pid, 'SIGTERM') }, 50)
    return { stopping: true }
  })
}
