import type { JobRecord } from '../jobs/job-model.js'

/**
 * "Why is my job idle?" — the question users ask most of every farm. Given
 * what the scheduler knows, say in one line what keeps a queued frame of the
 * job from starting, checking the causes in the order they apply.
 */
export interface WaitFacts {
  job: JobRecord
  dependencies: Array<{ id: string, state: string, frameLevel: boolean }>
  /** queued tasks whose dependencies are met */
  startable: number
  hosts: Array<{ id: string, hostname: string, allowed: boolean, free: number, paused?: string }>
  limits: Array<{ name: string, count: number, inUse: number }>
  hostsInUse: number
  jobsAhead: number
  /** other users/projects with frames running at this priority */
  sharingWith: string[]
}

export function waitingReason (f: WaitFacts): string {
  const { job } = f
  if (job.held === true) return 'held (farmesh release to let it start)'
  const jobDeps = f.dependencies.filter(d => !d.frameLevel && d.state !== 'done')
  if (jobDeps.length > 0) return `waiting for job${jobDeps.length > 1 ? 's' : ''} ${jobDeps.map(d => `${d.id} (${d.state})`).join(', ')}`
  if (f.startable === 0) {
    const d = f.dependencies.find(x => x.frameLevel)
    if (d != null) return `waiting for the same frames of job ${d.id} (${d.state})`
  }
  const allowed = f.hosts.filter(h => h.allowed)
  if (allowed.length === 0) return 'no host of the site matches its requirements, host lists and memory'
  const usable = allowed.filter(h => h.paused == null)
  if (usable.length === 0) return `every matching host is unavailable (${[...new Set(allowed.map(h => h.paused))].join(', ')})`
  const full = f.limits.find(l => l.inUse >= l.count)
  if (full != null) return `limit ${full.name}: ${full.inUse} of ${full.count} in use`
  if (job.spec.maxHosts != null && f.hostsInUse >= job.spec.maxHosts && usable.every(h => h.free <= 0)) return `machine limit: already on ${f.hostsInUse} host(s)`
  if (usable.every(h => h.free <= 0)) {
    if (f.jobsAhead > 0) return `all ${usable.length} matching host(s) busy; ${f.jobsAhead} more urgent job(s) come first`
    if (f.sharingWith.length > 0) return `all ${usable.length} matching host(s) busy; sharing them with ${f.sharingWith.join(', ')} at priority ${job.priority} (fair share)`
    return `all ${usable.length} matching host(s) busy`
  }
  return 'about to start'
}
