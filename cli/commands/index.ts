import type { Command } from '../command.js'

/** Commands added by later roles (jobs, federation, …). */
export const extraCommands: Command[] = []
