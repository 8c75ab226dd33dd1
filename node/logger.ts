/**
 * A small leveled logger writing one line per event to stderr, so the
 * foreground `farmesh start` shows what the node does; `--debug` adds detail.
 */
export interface Logger {
  info (msg: string): void
  debug (msg: string): void
  error (msg: string): void
}

export function createLogger (opts: { debug: boolean, quiet?: boolean, write?: (line: string) => void }): Logger {
  const write = opts.write ?? ((line: string) => { process.stderr.write(line + '\n') })
  const stamp = (): string => new Date().toISOString().slice(11, 23)
  return {
    info: (m) => { if (opts.quiet !== true) write(`${stamp()} ${m}`) },
    debug: (m) => { if (opts.debug) write(`${stamp()} debug ${m}`) },
    error: (m) => { write(`${stamp()} error ${m}`) }
  }
}
