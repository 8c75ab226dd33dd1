import { FarmNode } from '../../node/farm-node.js'
import { resolveNodeOptions, parseSlots } from '../../node/options.js'
import { createLogger } from '../../node/logger.js'
import { attachRoles } from '../../node/roles.js'
import type { Command } from '../command.js'

export const start: Command = {
  name: 'start',
  summary: 'run this host\'s node in the foreground until Ctrl-C',
  usage: 'start [--data DIR] [--site NAME] [--listen MA]… [--peer MA]… [--mdns-interface IFACE | --no-mdns] [--slots N] [--no-render] [--no-schedule] [--api HOST:PORT] [--drop-folder DIR]',
  options: {
    site: { type: 'string' },
    listen: { type: 'string', multiple: true },
    peer: { type: 'string', multiple: true },
    mdns: { type: 'boolean' },
    'mdns-interface': { type: 'string' },
    slots: { type: 'string' },
    render: { type: 'boolean' },
    schedule: { type: 'boolean' },
    api: { type: 'string' },
    'disable-renderer': { type: 'string', multiple: true },
    'drop-folder': { type: 'string' },
    quiet: { type: 'boolean' }
  },
  async run ({ values: v, data }) {
    const opts = await resolveNodeOptions({
      data,
      site: v.site,
      listen: v.listen,
      peers: v.peer,
      mdns: v['mdns-interface'] != null ? true : v.mdns,
      mdnsInterface: v['mdns-interface'],
      slots: v.slots != null ? parseSlots(v.slots) : undefined,
      render: v.render,
      schedule: v.schedule,
      api: v.api,
      disableRenderers: v['disable-renderer'],
      dropFolder: v['drop-folder'],
      debug: v.debug
    })
    const log = createLogger({ debug: opts.debug, quiet: v.quiet === true })
    const node = new FarmNode(opts, log)
    attachRoles(node)
    await node.start()
    await new Promise<void>(resolve => {
      const done = (): void => { resolve() }
      process.once('SIGINT', done)
      process.once('SIGTERM', done)
    })
    log.info('leaving the site')
    await node.stop()
    return 0
  }
}
