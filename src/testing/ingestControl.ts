/**
 * A small JSON-over-HTTP/1.1 control endpoint for an ingest server running in another process
 * (benchmark, demo, curl):
 *
 *   GET    /stats             → IngestStats
 *   GET    /requests          → the recent RequestRecords
 *   GET    /events?limit=100  → the last recorded events (JSON form, only with record "events")
 *   GET    /sequences?gaps=10 → with record "seqnums": per (source, type) the distinct seqnums,
 *                                lowest, highest, missing and first gaps; the ledger's footprint
 *   GET    /samples           → the sampled events (JSON form, with a sample recorder)
 *   GET    /ids               → every distinct produced id (with record "events" or "ids")
 *   GET    /memory?gc=1       → the process's memory (bytes: rss, heapUsed, …), after a full GC
 *                                when asked and the process runs with --expose-gc
 *   GET    /faults            → the current fault state
 *   POST   /faults            ← FaultConfig (applied on top; null clears a field; unknown keys
 *                                are refused with 400) → fault state
 *   DELETE /faults            → back to healthy
 *   POST   /clear             → forget everything received
 *   POST   /shutdown          → closes the server; the process exits
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { decodeFaultConfig, type FaultState } from "./ingestFaults.ts"
import type { IngestServerHandle } from "./IngestServer.ts"
import { receivedEventJson } from "./ingestModel.ts"
import type { SampleRecorder } from "./ingestRecorder.ts"

export interface ControlServer {
  readonly url: string
  readonly close: () => Promise<void>
}

/** The fault state without the in-process-only predicates. */
export const faultSnapshot = (state: Readonly<FaultState>): Omit<FaultState, "rejectPredicates"> & { rejectPredicates: number } => ({
  ...state,
  reset: state.reset === undefined ? undefined : { ...state.reset, count: Number.isFinite(state.reset.count) ? state.reset.count : -1 },
  rejectPredicates: state.rejectPredicates.length
})

const readJson = (request: http.IncomingMessage): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("error", reject)
    request.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8").trim()
      try {
        resolve(text === "" ? {} : JSON.parse(text))
      } catch (error) {
        reject(error)
      }
    })
  })

export const startControlServer = async (
  handle: IngestServerHandle,
  options: {
    readonly host?: string
    readonly port?: number
    readonly onShutdown?: () => void
    /** Served at GET /samples. */
    readonly samples?: SampleRecorder
  } = {}
): Promise<ControlServer> => {
  const send = (response: http.ServerResponse, status: number, body: unknown) => {
    response.writeHead(status, { "content-type": "application/json" })
    response.end(JSON.stringify(body))
  }
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://control")
    const route = `${request.method} ${url.pathname}`
    const run = async (): Promise<unknown> => {
      switch (route) {
        case "GET /stats":
          return handle.received.stats
        case "GET /requests":
          return handle.received.requests
        case "GET /events": {
          const limit = Number(url.searchParams.get("limit") ?? 100)
          return handle.received.events.slice(-limit).map(receivedEventJson)
        }
        case "GET /sequences": {
          const gaps = Number(url.searchParams.get("gaps") ?? 10)
          return { ...handle.received.sequences.footprint(), keys: handle.received.sequences.summary(gaps) }
        }
        case "GET /ids":
          return [...handle.received.ids]
        case "GET /samples":
          return (options.samples?.events() ?? []).map(receivedEventJson)
        case "GET /memory": {
          const gc = (globalThis as { gc?: () => void }).gc
          if (url.searchParams.get("gc") === "1" && gc !== undefined) gc()
          return { ...process.memoryUsage(), collected: url.searchParams.get("gc") === "1" && gc !== undefined }
        }
        case "GET /faults":
          return faultSnapshot(handle.faults.state)
        case "POST /faults":
          await handle.faults.apply(decodeFaultConfig(await readJson(request)))
          return faultSnapshot(handle.faults.state)
        case "DELETE /faults":
          await handle.faults.clear()
          return faultSnapshot(handle.faults.state)
        case "POST /clear":
          handle.received.clear()
          return handle.received.stats
        case "POST /shutdown":
          setImmediate(() => options.onShutdown?.())
          return { ok: true }
        default:
          return undefined
      }
    }
    run().then(
      (body) => (body === undefined ? send(response, 404, { error: `no route ${route}` }) : send(response, 200, body)),
      (error: unknown) => send(response, 400, { error: error instanceof Error ? error.message : String(error) })
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
      server.off("error", reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  return {
    url: `http://${options.host ?? "127.0.0.1"}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
