/**
 * Runs the reference ingest server in a child process (so its CPU does not compete with the code
 * under test on the same event loop) and talks to it through its JSON control endpoint.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Effect, type Scope } from "effect"
import type { FaultConfig } from "./ingestFaults.ts"
import type { receivedEventJson } from "./ingestModel.ts"
import { IngestServerError, type IngestStats, type ReceivedSequences, type RecordMode, type RequestRecord } from "./IngestServer.ts"
import type { SequenceSummary } from "./seqnumLedger.ts"

export interface IngestServerProcessOptions {
  readonly port?: number
  /** Default "ids"; "seqnums" keeps memory bounded over long runs (see IngestServerOptions.record). */
  readonly record?: RecordMode
  readonly jsonl?: string
  /** Keep every Nth produced event whole (the last 1000), for `samples()`. */
  readonly sampleEvery?: number
  /** Instead, keep whole every event whose id is in a one-in-N sample (./ingestSample.ts); 1 keeps all. */
  readonly sampleIds?: number
  readonly faults?: FaultConfig
  /** Extra Node.js flags for the child (e.g. ["--max-old-space-size=256"]). */
  readonly execArgv?: ReadonlyArray<string>
  /** How long to wait for the child to listen. Default 30 s: on a busy machine a Node.js start takes seconds. */
  readonly startTimeoutMs?: number
}

export interface IngestServerProcess {
  readonly url: string
  readonly controlUrl: string
  readonly pid: number
  readonly stats: () => Promise<IngestStats>
  readonly requests: () => Promise<ReadonlyArray<RequestRecord>>
  /** With record "seqnums": per (source, type) what was produced, with the first `gaps` gaps; the ledger's footprint. */
  readonly sequences: (gaps?: number) => Promise<
    ReturnType<ReceivedSequences["footprint"]> & { readonly keys: ReadonlyArray<SequenceSummary> }
  >
  /**
   * The child's memory in bytes (`process.memoryUsage()`); with `gc`, after a full collection when
   * the child runs with `execArgv: ["--expose-gc"]` (`collected` says whether it did).
   */
  readonly memory: (gc?: boolean) => Promise<NodeJS.MemoryUsage & { readonly collected: boolean }>
  /** Every distinct produced id (record "events" or "ids"). */
  readonly ids: () => Promise<ReadonlyArray<string>>
  /** The sampled events (with `sampleEvery` or `sampleIds`), in their JSON form. */
  readonly samples: () => Promise<ReadonlyArray<ReturnType<typeof receivedEventJson>>>
  /** Applies a fault configuration on top of the current one. */
  readonly faults: (config: FaultConfig) => Promise<void>
  readonly clearFaults: () => Promise<void>
  /** Forgets everything received. */
  readonly clear: () => Promise<void>
  /** Stops the child (SIGTERM, then SIGKILL after 2 s) and waits for it to exit. */
  readonly close: () => Promise<void>
}

const mainPath = () => {
  // Run the sibling entry point in whatever form this module is in (.ts in the repo, .js in dist).
  const self = fileURLToPath(import.meta.url)
  return self.replace(/IngestServerProcess\.(ts|js)$/, "ingest-server-main.$1")
}

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
  })

export const spawnIngestServer = async (options: IngestServerProcessOptions = {}): Promise<IngestServerProcess> => {
  const args = [
    ...(options.execArgv ?? []),
    mainPath(),
    "--exit-with-parent",
    "--record",
    options.record ?? "ids",
    "--port",
    String(options.port ?? 0),
    ...(options.jsonl === undefined ? [] : ["--jsonl", options.jsonl]),
    ...(options.sampleEvery === undefined ? [] : ["--sample-every", String(options.sampleEvery)]),
    ...(options.sampleIds === undefined ? [] : ["--sample-ids", String(options.sampleIds)]),
    ...(options.faults === undefined ? [] : ["--faults", JSON.stringify(options.faults)])
  ]
  const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] })
  const lines = createInterface({ input: child.stdout! })
  const started = await new Promise<{ url: string; controlUrl: string; pid: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error("the ingest server process did not start in time"))
    }, options.startTimeoutMs ?? 30_000)
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`the ingest server process exited with code ${code} before listening`))
    })
    lines.once("line", (line) => {
      clearTimeout(timer)
      try {
        resolve(JSON.parse(line))
      } catch {
        reject(new Error(`unexpected first line from the ingest server process: ${line}`))
      }
    })
  })
  child.removeAllListeners("exit")
  lines.on("line", () => {}) // keep draining stdout

  const call = async <A>(method: string, path: string, body?: unknown): Promise<A> => {
    const response = await fetch(started.controlUrl + path, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } })
    })
    const json = (await response.json()) as A & { error?: string }
    if (!response.ok) throw new Error(`ingest control ${method} ${path}: ${json.error ?? response.status}`)
    return json
  }

  let closing: Promise<void> | undefined
  return {
    url: started.url,
    controlUrl: started.controlUrl,
    pid: started.pid,
    stats: () => call("GET", "/stats"),
    requests: () => call("GET", "/requests"),
    sequences: (gaps = 10) => call("GET", `/sequences?gaps=${gaps}`),
    ids: () => call("GET", "/ids"),
    samples: () => call("GET", "/samples"),
    memory: (gc = false) => call("GET", gc ? "/memory?gc=1" : "/memory"),
    faults: (config) => call<unknown>("POST", "/faults", config).then(() => undefined),
    clearFaults: () => call<unknown>("DELETE", "/faults").then(() => undefined),
    clear: () => call<unknown>("POST", "/clear").then(() => undefined),
    close: () =>
      (closing ??= (async () => {
        const done = exited(child)
        child.kill("SIGTERM")
        const timer = setTimeout(() => child.kill("SIGKILL"), 2_000)
        await done
        clearTimeout(timer)
      })())
  }
}

/** The child process as a scoped resource. */
export const makeIngestServerProcess = (
  options: IngestServerProcessOptions = {}
): Effect.Effect<IngestServerProcess, IngestServerError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => spawnIngestServer(options),
      catch: (error) => new IngestServerError({ reason: error instanceof Error ? error.message : String(error) })
    }),
    (server) => Effect.promise(() => server.close())
  )
