/**
 * The reference ingest server as its own process (benchmark, demo):
 *
 *   node src/testing/ingest-server-main.ts [--port 0] [--record ids] [--jsonl events.jsonl] …
 *
 * Prints one JSON line on stdout once listening: {"url", "controlUrl", "port", "pid"}; then
 * serves until SIGINT/SIGTERM, POST /shutdown on the control endpoint, or (with
 * --exit-with-parent) until stdin closes. Every option also reads an INGEST_* variable.
 */
import { parseArgs } from "node:util"
import { startControlServer } from "./ingestControl.ts"
import { decodeFaultConfig, type FaultConfig } from "./ingestFaults.ts"
import { startIngestServer } from "./IngestServer.ts"
import { sampleRecorder } from "./ingestRecorder.ts"
import { idSampleRecorder } from "./ingestSample.ts"

const usage = `ingest-server-main: the reference Chip Ingress server (gRPC over h2c)
  --host HOST                  listen address (INGEST_HOST, default 127.0.0.1)
  --port N                     gRPC port (INGEST_PORT, default 0 = ephemeral)
  --control-port N             JSON control port (INGEST_CONTROL_PORT, default 0 = ephemeral)
  --record MODE                what to keep in memory: events, ids, seqnums (bounded: exact duplicates
                               and gaps per source and type) or counts (INGEST_RECORD, default ids)
  --jsonl PATH                 append produced events as JSON lines (INGEST_JSONL)
  --sample-every N             keep every Nth produced event whole, the last 1000, at GET /samples
                               of the control endpoint (INGEST_SAMPLE_EVERY)
  --sample-ids N               instead, keep whole every produced event whose id is in a one-in-N
                               sample (./ingestSample.ts), all copies, at GET /samples; 1 = every
                               event (INGEST_SAMPLE_IDS)
  --latency-ms N               fixed latency per request (INGEST_LATENCY_MS)
  --max-request-bytes N        reject larger requests with RESOURCE_EXHAUSTED (INGEST_MAX_REQUEST_BYTES)
  --require-authorization V    reject requests without this authorization header (INGEST_REQUIRE_AUTHORIZATION)
  --faults JSON                initial FaultConfig (INGEST_FAULTS)
  --exit-with-parent           exit when stdin closes (INGEST_EXIT_WITH_PARENT=1)
`

const { values } = parseArgs({
  options: {
    host: { type: "string" },
    port: { type: "string" },
    "control-port": { type: "string" },
    record: { type: "string" },
    jsonl: { type: "string" },
    "sample-every": { type: "string" },
    "sample-ids": { type: "string" },
    "latency-ms": { type: "string" },
    "max-request-bytes": { type: "string" },
    "require-authorization": { type: "string" },
    faults: { type: "string" },
    "exit-with-parent": { type: "boolean" },
    help: { type: "boolean" }
  }
})

if (values.help === true) {
  process.stdout.write(usage)
  process.exit(0)
}

const env = process.env
const option = (name: keyof typeof values, variable: string): string | undefined => {
  const value = values[name]
  return typeof value === "string" ? value : env[variable]
}
const integer = (name: keyof typeof values, variable: string): number | undefined => {
  const raw = option(name, variable)
  if (raw === undefined || raw === "") return undefined
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`--${name} must be a non-negative integer, got ${JSON.stringify(raw)}\n${usage}`)
    process.exit(2)
  }
  return n
}

const record = option("record", "INGEST_RECORD") ?? "ids"
if (record !== "events" && record !== "ids" && record !== "seqnums" && record !== "counts") {
  process.stderr.write(`--record must be events, ids, seqnums or counts\n${usage}`)
  process.exit(2)
}
const latencyMs = integer("latency-ms", "INGEST_LATENCY_MS")
const maxRequestBytes = integer("max-request-bytes", "INGEST_MAX_REQUEST_BYTES")
const requireAuthorization = option("require-authorization", "INGEST_REQUIRE_AUTHORIZATION")
const faultsJson = option("faults", "INGEST_FAULTS")
const initialFaults = (json: string): FaultConfig => {
  try {
    return decodeFaultConfig(JSON.parse(json))
  } catch (error) {
    process.stderr.write(`--faults: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(2)
  }
}
const faults: FaultConfig = {
  ...(faultsJson === undefined ? {} : initialFaults(faultsJson)),
  ...(latencyMs === undefined ? {} : { latencyMs }),
  ...(maxRequestBytes === undefined ? {} : { maxRequestBytes }),
  ...(requireAuthorization === undefined ? {} : { requireAuthorization })
}
const host = option("host", "INGEST_HOST") ?? "127.0.0.1"
const jsonl = option("jsonl", "INGEST_JSONL")
const sampleEvery = integer("sample-every", "INGEST_SAMPLE_EVERY")
const sampleIds = integer("sample-ids", "INGEST_SAMPLE_IDS")
if (sampleEvery !== undefined && sampleEvery > 0 && sampleIds !== undefined && sampleIds > 0) {
  process.stderr.write(`--sample-every and --sample-ids are exclusive\n${usage}`)
  process.exit(2)
}
const samples = sampleEvery !== undefined && sampleEvery > 0
  ? sampleRecorder({ every: sampleEvery })
  : sampleIds !== undefined && sampleIds > 0
  ? idSampleRecorder(sampleIds)
  : undefined

const server = await startIngestServer({
  host,
  port: integer("port", "INGEST_PORT") ?? 0,
  record,
  faults,
  ...(jsonl === undefined ? {} : { jsonl }),
  ...(samples === undefined ? {} : { recorders: [samples] })
})

let stopping = false
const shutdown = async (code: number) => {
  if (stopping) return
  stopping = true
  await Promise.allSettled([control.close(), server.close()])
  process.exit(code)
}

const control = await startControlServer(server, {
  host,
  port: integer("control-port", "INGEST_CONTROL_PORT") ?? 0,
  onShutdown: () => void shutdown(0),
  ...(samples === undefined ? {} : { samples })
})

process.on("SIGINT", () => void shutdown(0))
process.on("SIGTERM", () => void shutdown(0))
if (values["exit-with-parent"] === true || env["INGEST_EXIT_WITH_PARENT"] === "1") {
  process.stdin.on("end", () => void shutdown(0))
  process.stdin.on("error", () => void shutdown(0))
  process.stdin.resume()
}

process.stdout.write(JSON.stringify({ url: server.url, controlUrl: control.url, port: server.port, pid: process.pid }) + "\n")
