import { ApiError } from '../errors.js'
import type { ApiServer } from '../api-server.js'
import type { FederationRole } from './federation-role.js'
import type { OriginRole } from '../origin/origin-role.js'

/** API routes for the site's identity and its federation with other sites. */
export function registerFederationRoutes (api: ApiServer, fed: FederationRole, origin: OriginRole): void {
  const text = (v: unknown, field: string): string => {
    if (typeof v !== 'string' || v.trim() === '') throw new ApiError(`${field}: expected a non-empty string`, 400)
    return v.trim()
  }
  api.route('GET', '/v1/site', () => fed.siteView())
  api.route('GET', '/v1/federation', async () => (await fed.store.list()).map(({ nonces: _n, ...s }) => s))
  api.route('GET', '/v1/federation/pending', async () => (await fed.store.list()).filter(s => s.state === 'pending').map(({ nonces: _n, ...s }) => s))
  api.route('POST', '/v1/federation/invite', async ({ body }) => {
    const sec = (body as any)?.expiresSec ?? 3600
    if (!Number.isFinite(sec) || sec <= 0 || sec > 30 * 86_400) throw new ApiError('expires: expected a duration up to 30 days', 400)
    return await fed.invite(sec * 1000)
  })
  api.route('POST', '/v1/federation/join', async ({ body }) => await fed.join(text((body as any)?.token, 'token')))
  api.route('POST', '/v1/federation/add', async ({ body }) => await fed.add(text((body as any)?.address, 'address')))
  api.route('POST', '/v1/federation/approve', async ({ body }) => await fed.approve(text((body as any)?.site, 'site')))
  api.route('POST', '/v1/federation/remove', async ({ body }) => ({ removed: await fed.remove(text((body as any)?.site, 'site')) }))
  api.route('POST', '/v1/jobs/:id/outsource', async ({ params, body }) => await origin.outsourceExisting(params.id, (body as any)?.site))
  api.route('GET', '/v1/jobs/:id/billing', async ({ params }) => {
    const job = await origin.outputs(params.id)
    if (job == null) throw new ApiError(`job ${params.id} was not submitted on this node`, 404)
    return { id: job.id, outsourced: job.outsourced ?? null, billing: job.billing ?? null }
  })
}
