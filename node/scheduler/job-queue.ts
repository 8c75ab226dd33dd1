/**
 * The job queue, ordered as in the patent: by priority (lower value = more
 * urgent), then first-come first-served within a priority (by `seq`, the
 * order jobs were submitted). A new priority-3 job lands after every job of
 * priority ≤ 3 and before the first priority-5 job. Pure and in-memory.
 */

export interface Queueable {
  id: string
  priority: number
  seq: number
}

export class JobQueue<T extends Queueable> {
  /** kept sorted by (priority, seq) */
  private readonly jobs: T[] = []
  private readonly byId = new Map<string, T>()

  /** Index of the first job ordered after (priority, seq): insertion keeps FIFO among equals. */
  private upperBound (priority: number, seq: number): number {
    let lo = 0
    let hi = this.jobs.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const j = this.jobs[mid]
      if (j.priority < priority || (j.priority === priority && j.seq <= seq)) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** Index of the first job not ordered before (priority, seq). */
  private lowerBound (priority: number, seq: number): number {
    let lo = 0
    let hi = this.jobs.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const j = this.jobs[mid]
      if (j.priority < priority || (j.priority === priority && j.seq < seq)) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  private indexOf (job: T): number {
    // Jobs sharing (priority, seq) sit side by side from the lower bound.
    for (let i = this.lowerBound(job.priority, job.seq); i < this.jobs.length; i++) {
      if (this.jobs[i] === job) return i
    }
    return -1
  }

  get size (): number {
    return this.jobs.length
  }

  /** Add a job at its place in the order. Throws on a duplicate id or a non-numeric priority/seq. */
  insert (job: T): void {
    if (this.byId.has(job.id)) throw new Error(`job ${job.id} is already queued`)
    if (!Number.isFinite(job.priority) || !Number.isFinite(job.seq)) throw new RangeError(`job ${job.id}: priority and seq must be finite numbers`)
    this.jobs.splice(this.upperBound(job.priority, job.seq), 0, job)
    this.byId.set(job.id, job)
  }

  /** Take a job out of the queue; returns it, or undefined if it was not queued. */
  remove (id: string): T | undefined {
    const job = this.byId.get(id)
    if (job === undefined) return undefined
    this.jobs.splice(this.indexOf(job), 1)
    this.byId.delete(id)
    return job
  }

  /**
   * Change a queued job's priority (updating the job object in place) and
   * move it. Within its new priority it keeps its submission place (by seq),
   * not the back of the line. Returns the job, or undefined if not queued.
   */
  reprioritize (id: string, priority: number): T | undefined {
    if (!Number.isFinite(priority)) throw new RangeError(`priority must be a finite number, got ${priority}`)
    const job = this.remove(id)
    if (job === undefined) return undefined
    job.priority = priority
    this.insert(job)
    return job
  }

  get (id: string): T | undefined {
    return this.byId.get(id)
  }

  has (id: string): boolean {
    return this.byId.has(id)
  }

  /** The jobs in scheduling order (a copy). */
  ordered (): T[] {
    return [...this.jobs]
  }

  /** The most urgent job, if any. */
  peek (): T | undefined {
    return this.jobs[0]
  }

  [Symbol.iterator] (): Iterator<T> {
    return this.ordered()[Symbol.iterator]()
  }
}
