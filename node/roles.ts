import { join } from 'node:path'
import type { FarmNode } from './farm-node.js'
import { SiteClient } from './site-client.js'
import { JobStore } from '../storage/job-store.js'
import { BlobStore } from '../storage/blob-store.js'
import { Election } from './scheduler/election.js'
import { Replicator } from './scheduler/replication.js'
import { SchedulerRole } from './scheduler/scheduler-role.js'
import { RendererRole } from './render/renderer-role.js'
import { OriginRole } from './origin/origin-role.js'
import { registerJobRoutes } from './jobs-api.js'
import { registerDashboard } from './dashboard/routes.js'
import { DropFolder } from './origin/drop-folder.js'
import { ApiError } from './errors.js'
import { FederationRole } from './federation/federation-role.js'
import { registerFederationRoutes } from './federation/federation-api.js'

/**
 * Plug the roles every node runs into it: origin (jobs submitted here),
 * renderer (its slots), replica (a copy of the site's job state) and
 * scheduler (active only on the node the site elected). They share one job
 * database and one content store.
 */
export function attachRoles (node: FarmNode): void {
  node.onStart(async () => {
    const store = new JobStore(node.dir.db)
    await store.open()
    const blobs = new BlobStore(join(node.dir.blobs))
    await blobs.init()
    const client = new SiteClient(node)
    const election = new Election({
      self: node.peerId,
      table: node.table,
      term: (await store.getMeta('term')) ?? 0,
      startedAt: node.advertiser.current().startedAt,
      canSchedule: node.opts.schedule,
      persistTerm: async (term) => { await store.putMeta('term', term).catch((err: any) => { node.log.debug(`term not persisted: ${err.message}`) }) },
      advertise: (claim, term) => { node.advertiser.update({ claim, term }) }
    })
    node.setSchedulerView({ leader: () => election.leader(), term: () => election.currentTerm() })
    node.advertiser.update({ term: election.currentTerm() })
    const replicator = new Replicator(node, store, blobs, client, election)
    const origin = new OriginRole(node, store, blobs, client, replicator)
    const renderer = new RendererRole(node, blobs, client, origin.sink, election)
    const scheduler = new SchedulerRole(node, store, client, election, replicator)
    const federation = new FederationRole(node, blobs, client, origin)
    origin.setFederation(federation)
    await replicator.start()
    await origin.start()
    await federation.start()
    await federation.restore(await store.allOrigin())
    await renderer.start()
    await scheduler.start()
    election.start()
    registerFederationRoutes(node.api, federation, origin)
    registerJobRoutes(node.api, client, origin, renderer, node.events, (id) => {
      const e = node.table.get(id) ?? node.table.entries().find(x => x.advert.fingerprint.hostname === id)
      if (e == null) throw new ApiError(`no host ${id} in this site`, 404)
      return e.advert.peerId
    })
    registerDashboard(node.api, node)
    const drop = node.opts.dropFolder != null ? new DropFolder(node.opts.dropFolder, async (spec) => await origin.submit({ spec }) as { id: string }, node.log) : undefined
    // the drop folder submits through the scheduler: start it once the site had a moment to form
    if (drop != null) setTimeout(() => { void drop.start().catch((err: any) => { node.log.error(`drop folder: ${err.message}`) }) }, 1_000).unref()
    node.onStop(async () => {
      drop?.stop()
      election.stop()
      federation.stop()
      scheduler.stop()
      await renderer.stop()
      await store.close()
    })
  })
}
