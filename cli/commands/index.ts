import type { Command } from '../command.js'
import { submit } from './submit.js'
import { watch } from './watch.js'
import { jobs, job, kill, retry, priority, fetchOutputs, hold, release, drain, stopHost } from './jobs.js'
import { demo } from './demo.js'
import { dashboard } from './dashboard.js'
import { limits, nimby } from './policies.js'
import { site, federation, outsource } from './federation.js'

/** Commands about jobs, and the demo. */
export const extraCommands: Command[] = [submit, jobs, job, watch, kill, retry, priority, hold, release, fetchOutputs, drain, stopHost, limits, nimby, site, federation, outsource, dashboard, demo]
