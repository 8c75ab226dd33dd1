import { readFile } from 'node:fs/promises'
import { dataDirPaths } from '../storage/data-dir.js'

/**
 * How the CLI reaches the node that owns a data directory: the node writes
 * its API address to `api.json` and its token to `api.token` there.
 */
export class NodeNotRunningError extends Error {
  constructor (message: string) { super(message); this.name = 'NodeNotRunningError' }
}

export class ApiCallError extends Error {
  constructor (message: string, readonly status: number, readonly field?: string) { super(message); this.name = 'ApiCallError' }
}

export interface ApiClient {
  url: string
  call: <T = any>(method: string, path: string, body?: unknown) => Promise<T>
  /** the raw response, for streams and files */
  fetch: (path: string, init?: RequestInit) => Promise<Response>
}

export async function connectApi (dataDir: string): Promise<ApiClient> {
  const paths = dataDirPaths(dataDir)
  let info: { url: string, pid: number }
  let token: string
  try {
    info = JSON.parse(await readFile(paths.apiInfo, 'utf8'))
    token = (await readFile(paths.apiToken, 'utf8')).trim()
  } catch {
    throw new NodeNotRunningError(`no farmesh node is running on data directory ${paths.root} (start one with: farmesh start --data ${paths.root})`)
  }
  const headers = { authorization: `Bearer ${token}` }
  const doFetch = async (path: string, init: RequestInit = {}): Promise<Response> => {
    try {
      return await fetch(info.url + path, { ...init, headers: { ...headers, ...(init.headers as Record<string, string> ?? {}) } })
    } catch {
      throw new NodeNotRunningError(`the farmesh node of ${paths.root} does not answer at ${info.url} (is it running?)`)
    }
  }
  return {
    url: info.url,
    fetch: doFetch,
    call: async (method, path, body) => {
      const res = await doFetch(path, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body)
      })
      const text = await res.text()
      let parsed: any
      try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = { error: text } }
      if (!res.ok) throw new ApiCallError(parsed?.error ?? `HTTP ${res.status}`, res.status, parsed?.field)
      return parsed
    }
  }
}
