import { isFinished, type JobRecord, type TaskRecord, type Version } from '../jobs/job-model.js'

/**
 * How two copies of a job's state merge: a replica receiving the
 * scheduler's writes, or two sides of a healed partition. Pure functions, so
 * every node merges alike whatever order records arrive in.
 *
 * - A retry starts a new generation (`gen`): the newer generation wins.
 * - Within a generation a done frame stays done: its output is at the
 *   origin, and a frame is committed once.
 * - A finished job stays finished within its generation.
 * - Otherwise the higher version (term, then counter) wins: the scheduler
 *   of the newer term overrides a deposed one.
 */
export function compareVersion (a: Version | undefined, b: Version | undefined): number {
  const x = a ?? { term: 0, n: 0 }
  const y = b ?? { term: 0, n: 0 }
  return x.term - y.term || x.n - y.n
}

export function taskWins (current: TaskRecord | undefined, incoming: TaskRecord): boolean {
  if (current == null) return true
  const g = (incoming.gen ?? 0) - (current.gen ?? 0)
  if (g !== 0) return g > 0
  if (current.state === 'done' && incoming.state !== 'done') return false
  if (incoming.state === 'done' && current.state !== 'done') return true
  return compareVersion(incoming.ver, current.ver) > 0
}

export function jobWins (current: JobRecord | undefined, incoming: JobRecord): boolean {
  if (current == null) return true
  const g = (incoming.gen ?? 0) - (current.gen ?? 0)
  if (g !== 0) return g > 0
  if (isFinished(current.state) && !isFinished(incoming.state)) return false
  if (isFinished(incoming.state) && !isFinished(current.state)) return true
  return compareVersion(incoming.ver, current.ver) > 0
}
