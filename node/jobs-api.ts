import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { ApiError } from './errors.js'
import type { ApiServer } from './api-server.js'
import type { SiteClient } from './site-client.js'
import type { OriginRole } from './origin/origin-role.js'
import type { RendererRole } from './render/renderer-role.js'
import type { SiteEvents, SiteEvent } from './site-events.js'
import { HOST_ACTIONS, type HostAction } from '../protocols/render-rpc.js'

/**
 * API routes for jobs. Submissions are taken by this node as the job's
 * origin; queries and control go to the site's scheduler, wherever it runs.
 */
export function registerJobRoutes (api: ApiServer, client: SiteClient, origin: OriginRole, renderer: RendererRole, events: SiteEvents, resolveHost: (idOrName: string) => string): void {
  api.route('POST', '/v1/jobs', async ({ body }) => await origin.submit(body))
  api.route('GET', '/v1/jobs', async () => await client.scheduler({ op: 'jobs' }))
  api.route('GET', '/v1/jobs/:id', async ({ params }) => await client.scheduler({ op: 'job', id: params.id }))
  api.route('POST', '/v1/jobs/:id/kill', async ({ params }) => await client.scheduler({ op: 'control', id: params.id, action: 'kill' }))
  api.route('POST', '/v1/jobs/:id/retry', async ({ params, body }) => await client.scheduler({ op: 'control', id: params.id, action: 'retry', frames: (body as any)?.frames }))
  api.route('POST', '/v1/jobs/:id/priority', async ({ params, body }) => {
    const p = (body as any)?.priority
    if (!Number.isInteger(p) || p < 0 || p > 1000) throw new ApiError('priority: expected an integer from 0 to 1000', 400)
    return await client.scheduler({ op: 'control', id: params.id, action: 'priority', priority: p })
  })
  api.route('POST', '/v1/jobs/:id/fetch', async ({ params, body }) => {
    const dir = (body as any)?.dir
    if (typeof dir !== 'string' || dir === '') throw new ApiError('dir: expected a directory path', 400)
    return await origin.fetch(params.id, dir)
  })
  api.route('GET', '/v1/jobs/:id/outputs', async ({ params }) => {
    const job = await origin.outputs(params.id)
    if (job == null) throw new ApiError(`job ${params.id} was not submitted on this node`, 404)
    return { id: job.id, outputs: job.outputs, finished: job.finished ?? null }
  })
  api.route('GET', '/v1/jobs/:id/outputs/:name', async ({ params, res }) => {
    const job = await origin.outputs(params.id)
    if (job?.outputs[params.name] == null) throw new ApiError(`no output ${params.name} for job ${params.id} here`, 404)
    const path = origin.outputPath(params.id, params.name)
    const st = await stat(path)
    res.writeHead(200, { 'content-type': params.name.endsWith('.png') ? 'image/png' : 'application/octet-stream', 'content-length': st.size })
    createReadStream(path).pipe(res)
    return undefined
  })
  api.route('GET', '/v1/running', () => renderer.list())
  api.route('GET', '/v1/limits', async () => await client.scheduler({ op: 'limits' }))
  api.route('POST', '/v1/limits', async ({ body }) => {
    const b = body as any
    if (typeof b?.name !== 'string' || b.name === '') throw new ApiError('name: expected a limit name', 400)
    if (!Number.isInteger(b?.count) || b.count < 0) throw new ApiError(`count: expected a whole number of at least 0, got ${JSON.stringify(b?.count)}`, 400)
    return await client.scheduler({ op: 'limits', set: { name: b.name, count: b.count } })
  })
  for (const action of ['hold', 'release'] as const) {
    api.route('POST', `/v1/jobs/:id/${action}`, async ({ params }) => await client.scheduler({ op: 'control', id: params.id, action }))
  }
  api.route('POST', '/v1/jobs/:id/kill-frames', async ({ params, body }) => {
    const frames = (body as any)?.frames
    if (typeof frames !== 'string' || frames === '') throw new ApiError('frames: expected a frame range', 400)
    return await client.scheduler({ op: 'control', id: params.id, action: 'kill-frames', frames })
  })
  // host control goes to the host itself, wherever it is in the site
  api.route('POST', '/v1/hosts/:id/:action', async ({ params }) => {
    const action = params.action
    if (!(HOST_ACTIONS as readonly string[]).includes(action)) throw new ApiError(`no host action ${action}: ${HOST_ACTIONS.join(', ')}`, 404)
    const host = resolveHost(params.id)
    return await client.renderer(host, { op: 'host', action: action as HostAction })
  })
  api.route('GET', '/v1/events', ({ raw, res }) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
    res.write(': farmesh events\n\n')
    const send = (e: SiteEvent): void => { res.write(`event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`) }
    events.on('event', send)
    const ping = setInterval(() => { res.write(': ping\n\n') }, 15_000)
    raw.on('close', () => { clearInterval(ping); events.off('event', send) })
    return undefined
  })
}
