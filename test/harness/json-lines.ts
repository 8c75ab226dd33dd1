import type { Readable } from 'node:stream'

/**
 * Call `fn` with each JSON line a helper process writes to stdout (the
 * pollers and agents the harness runs inside namespaces). Lines that are not
 * JSON are skipped.
 */
export function onJsonLines<T> (stream: Readable | null | undefined, fn: (value: T) => void): void {
  let buffer = ''
  stream?.setEncoding('utf8').on('data', (d: string) => {
    buffer += d
    let nl: number
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl)
      buffer = buffer.slice(nl + 1)
      let value: T
      try { value = JSON.parse(line) as T } catch { continue }
      fn(value)
    }
  })
}
