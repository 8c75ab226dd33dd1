import { readFile } from 'node:fs/promises'
import { connectApi } from '../api-client.js'
import type { Command } from '../command.js'
import { dataDirPaths } from '../../storage/data-dir.js'

/**
 * `farmesh dashboard`: the address of this node's web dashboard, with the
 * API token in the URL fragment (a fragment never reaches the server or a
 * log; the page keeps the token for its tab and drops it from the address).
 */
export const dashboard: Command = {
  name: 'dashboard',
  summary: 'print the address of this node\'s web dashboard (hosts, running frames, queues, jobs)',
  usage: 'dashboard [--job ID] [--data DIR] [--json]',
  options: { job: { type: 'string' } },
  async run ({ data, json, values }, out) {
    const api = await connectApi(data)
    await api.call('GET', '/v1/status')
    const token = (await readFile(dataDirPaths(data).apiToken, 'utf8')).trim()
    const route = values.job != null ? `&/job/${encodeURIComponent(values.job)}` : ''
    const url = `${api.url}/#token=${token}${route}`
    if (json) { out.json({ url, api: api.url }); return }
    out.print(url)
  }
}
