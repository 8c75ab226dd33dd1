import { FarmNode } from '../../node/farm-node.js'
import { resolveNodeOptions, parseSlots } from '../../node/options.js'
import { createLogger } from '../../node/logger.js'
import { attachRoles } from '../../node/roles.js'
import type { Command } from '../command.js'
import { UsageError } from '../../node/errors.js'

function numberFlag (v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${flag}: expected a number, got ${JSON.stringify(v)}`)
  return n
}

export const start: Command = {
  name: 'start',
  summary: 'run this host\'s node in the foreground until Ctrl-C',
  usage: 'start [--data DIR] [--site NAME] [--listen MA]… [--peer MA]… [--mdns-interface IFACE | --no-mdns] [--slots N] [--no-render] [--no-schedule] [--api HOST:PORT] [--drop-folder DIR] [--workstation [--idle-after SEC] [--grace SEC] [--activity-file F] [--load-threshold X]] [--sleep HH:MM-HH:MM]…',
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
    workstation: { type: 'boolean' },
    'allow-unsandboxed': { type: 'boolean' },
    'remote-retention': { type: 'string' },
    'remote-quota': { type: 'string' },
    'idle-after': { type: 'string' },
    grace: { type: 'string' },
    'activity-file': { type: 'string' },
    'load-threshold': { type: 'string' },
    sleep: { type: 'string', multiple: true },
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
      debug: v.debug,
      sleep: v.sleep,
      allowUnsandboxed: v['allow-unsandboxed'],
      remoteRetentionDays: numberFlag(v['remote-retention'], '--remote-retention'),
      remoteQuotaGb: numberFlag(v['remote-quota'], '--remote-quota'),
      workstation: v.workstation === true
        ? {
            idleAfterSec: numberFlag(v['idle-after'], '--idle-after') ?? 300,
            graceSec: numberFlag(v.grace, '--grace') ?? 30,
            activityFile: v['activity-file'],
            loadThreshold: numberFlag(v['load-threshold'], '--load-threshold')
          }
        : undefined
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
