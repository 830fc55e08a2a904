/**
 * The reference ingest server: a real Connect/gRPC server (HTTP/2, h2c or TLS) implementing the
 * Chip Ingress API (`Publish`, `PublishBatch`, `Ping`). It records what it receives and injects
 * faults on demand (./ingestFaults.ts). Used by tests, the demo and the benchmark; runnable in its
 * own process through ./ingest-server-main.ts.
 */
import * as fs from "node:fs"
import * as http2 from "node:http2"
import type { AddressInfo } from "node:net"
import { create, fromBinary, toBinary } from "@bufbuild/protobuf"
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt"
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire"
import { Code, ConnectError, createContextKey, createContextValues, type HandlerContext } from "@connectrpc/connect"
import { connectNodeAdapter } from "@connectrpc/connect-node"
import { Context, Effect, Layer, Schema, type Scope } from "effect"
import {
  ChipIngress,
  type PublishResponse,
  PublishErrorCode,
  PublishErrorSchema,
  PublishOptionsSchema,
  type PublishResult,
  PublishResponseSchema,
  PublishResultSchema
} from "../gen/chipingress/pb/chip_ingress_pb.js"
import { type CloudEvent, CloudEventSchema } from "../gen/io/cloudevents/v1/cloudevent_pb.js"
import { RetryInfoSchema } from "../gen/google/rpc/retry_info_pb.js"
import { batchRequestBytes, eventRequestBytes, type RawCloudEventBatch, rawPublishBatch } from "../transport/rawBatch.ts"
import {
  type FailureSpec,
  type FaultConfig,
  type FaultState,
  healthy,
  type IngestFaults,
  makeFaults,
  type PublishErrorCodeName,
  toCode
} from "./ingestFaults.ts"
import { type EventSample, makeEventSample } from "./ingestSample.ts"

export type AttributeValue = boolean | number | string | Uint8Array | Date

/** One event the server produced (accepted). */
export interface ReceivedEvent {
  readonly id: string
  readonly source: string
  readonly type: string
  readonly specVersion: string
  /** The `seqnum` attribute, if present. */
  readonly seqnum: string | undefined
  readonly attributes: Readonly<Record<string, AttributeValue>>
  /** `binary_data`, `text_data`, or the packed value of `proto_data`. */
  readonly data: Uint8Array | string | undefined
  /** The encoded CloudEvent exactly as it arrived. */
  readonly payload: Uint8Array
  /** Epoch milliseconds. */
  readonly receivedAt: number
}

export interface IngestStats {
  /** Publish and PublishBatch requests that reached the handler. */
  readonly requests: number
  /** Requests answered with an error status (injected, down, auth, size). */
  readonly failedRequests: number
  /** Requests the client cancelled (or whose deadline passed) while the server held them. */
  readonly abandonedRequests: number
  /** Events produced (accepted), duplicates included. */
  readonly events: number
  /** Events answered with a per-event error. */
  readonly rejectedEvents: number
  /** Distinct event ids produced; null when recording only counts. */
  readonly uniqueIds: number | null
  /** Produced events whose id had been produced before; null when recording only counts. */
  readonly duplicates: number | null
  /** Encoded bytes of the produced events. */
  readonly bytes: number
}

/** A request as seen by the server (the last `requestLogSize` are kept). */
export interface RequestRecord {
  readonly method: "Publish" | "PublishBatch"
  readonly receivedAt: number
  readonly events: number
  /** Uncompressed request message bytes. */
  readonly bytes: number
  /** `grpc-encoding` of the request: "identity", "gzip", … */
  readonly encoding: string
  readonly headers: Readonly<Record<string, string>>
}

export interface IngestReceived {
  /** Produced events in arrival order (only when `record` is "events"). */
  readonly events: ReadonlyArray<ReceivedEvent>
  readonly stats: IngestStats
  /** Distinct produced ids (empty when `record` is "counts"). */
  readonly ids: ReadonlySet<string>
  /** The events kept whole by `sample` (undefined without it). */
  readonly sample: EventSample | undefined
  readonly requests: ReadonlyArray<RequestRecord>
  /**
   * Resolves once `predicate(stats)` holds, re-checked whenever a request arrives, an event is
   * recorded or a connection closes; rejects after `timeoutMs` (default 5 s).
   */
  readonly waitFor: (predicate: (stats: IngestStats) => boolean, timeoutMs?: number) => Promise<IngestStats>
  /** Resolves once at least `count` events were produced. */
  readonly waitForEvents: (count: number, timeoutMs?: number) => Promise<IngestStats>
  /** Forgets everything received so far (faults stay). */
  readonly clear: () => void
}

export interface IngestServerOptions {
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Default 0: an ephemeral port. */
  readonly port?: number
  /**
   * What to keep in memory: full events (default), only ids (for duplicate counts), or only
   * counts. With "ids" or "counts" (and no JSON lines or rejection predicates) each event's
   * envelope alone is decoded (id, source, spec_version, type): enough for validation and
   * rejection rules, at a fraction of the CPU.
   */
  readonly record?: "events" | "ids" | "counts"
  /** Appends every produced event to this file as a JSON line. */
  readonly jsonl?: string
  /**
   * Also keep whole one produced event in `sample` (by id, ./ingestSample.ts `inSample`), decoded
   * from its payload whatever `record` is: 1 keeps every event, 16 one in 16.
   */
  readonly sample?: number
  /** Initial faults. */
  readonly faults?: FaultConfig
  /** Ping's answer. Default "pong". */
  readonly pingMessage?: string
  /** Source of randomness for `failFraction`. Default Math.random. */
  readonly random?: () => number
  /** Serve TLS (`https://` URL) with this key and certificate (PEM) instead of h2c. */
  readonly tls?: { readonly key: string | Buffer; readonly cert: string | Buffer }
  /** Compress responses over 1 KiB when the client accepts it (connect's default). Default false. */
  readonly compressResponses?: boolean
  /** How many request records to keep. Default 100. */
  readonly requestLogSize?: number
}

export interface IngestServerHandle {
  /** `http://host:port` (`https://` with `tls`), for GrpcTransport's `url`. */
  readonly url: string
  readonly port: number
  readonly received: IngestReceived
  readonly faults: IngestFaults
  /** Open HTTP/2 connections right now. */
  readonly connections: () => number
  /** Drops open connections, stops listening, flushes the JSON lines file. */
  readonly close: () => Promise<void>
}

const rawRequestKey = createContextKey<http2.Http2ServerRequest | undefined>(undefined, { description: "node request" })

const publishErrorCodes: Record<PublishErrorCodeName, PublishErrorCode> = {
  UNKNOWN: PublishErrorCode.UNKNOWN,
  VALIDATION_FAILED: PublishErrorCode.VALIDATION_FAILED,
  SCHEMA_MISSING: PublishErrorCode.SCHEMA_MISSING,
  ENCODE_ERROR: PublishErrorCode.ENCODE_ERROR,
  DOMAIN_MISCONFIGURATION: PublishErrorCode.DOMAIN_MISCONFIGURATION
}

type Rejection = { readonly code: PublishErrorCodeName; readonly reason: string }

const attributeValue = (value: CloudEvent["attributes"][string]): AttributeValue | undefined => {
  const attr = value.attr
  switch (attr.case) {
    case "ceTimestamp":
      return timestampDate(attr.value)
    case undefined:
      return undefined
    default:
      return attr.value
  }
}

const toReceived = (event: CloudEvent, payload: Uint8Array, receivedAt: number): ReceivedEvent => {
  const attributes: Record<string, AttributeValue> = {}
  for (const [name, value] of Object.entries(event.attributes)) {
    const plain = attributeValue(value)
    if (plain !== undefined) attributes[name] = plain
  }
  const seq = attributes["seqnum"]
  const data = event.data.case === "protoData" ? event.data.value.value : event.data.value
  return {
    id: event.id,
    source: event.source,
    type: event.type,
    specVersion: event.specVersion,
    seqnum: seq === undefined ? undefined : String(seq),
    attributes,
    data,
    payload,
    receivedAt
  }
}

/**
 * The envelope of an encoded CloudEvent: id, source, spec_version and type (fields 1 to 4), the
 * other fields skipped. What validation and rejection rules look at; used when nothing keeps or
 * inspects whole events (`record: "ids" | "counts"`, no JSON lines, no rejection predicates),
 * so a server under load does not build every attribute of every event only to drop it.
 */
const headOf = (payload: Uint8Array, receivedAt: number): ReceivedEvent => {
  const reader = new BinaryReader(payload)
  const head = ["", "", "", "", ""] // by field number: 1 id, 2 source, 3 spec_version, 4 type
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag()
    if (field >= 1 && field <= 4) {
      if (wireType !== WireType.LengthDelimited) throw new Error(`field ${field} has wire type ${wireType}`)
      head[field] = reader.string()
    } else reader.skip(wireType, field)
  }
  return {
    id: head[1]!,
    source: head[2]!,
    specVersion: head[3]!,
    type: head[4]!,
    seqnum: undefined,
    attributes: {},
    data: undefined,
    payload,
    receivedAt
  }
}

/** What a real ingest refuses regardless of configuration. */
const validateEvent = (event: ReceivedEvent): Rejection | undefined => {
  if (event.id === "") return { code: "VALIDATION_FAILED", reason: "id is empty" }
  if (event.source === "") return { code: "VALIDATION_FAILED", reason: "source is empty" }
  if (event.type === "") return { code: "VALIDATION_FAILED", reason: "type is empty" }
  if (event.specVersion !== "1.0") {
    return { code: "VALIDATION_FAILED", reason: `spec_version must be "1.0", got ${JSON.stringify(event.specVersion)}` }
  }
  return undefined
}

/** The JSON form of a received event (JSON lines file, control endpoint): bytes as base64, times as ISO strings. */
export const receivedEventJson = (event: ReceivedEvent) => {
  const plain = (v: AttributeValue) =>
    v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v instanceof Date ? v.toISOString() : v
  const attributes: Record<string, string | number | boolean> = {}
  for (const [k, v] of Object.entries(event.attributes)) attributes[k] = plain(v)
  return {
    id: event.id,
    source: event.source,
    type: event.type,
    specversion: event.specVersion,
    seqnum: event.seqnum,
    attributes,
    ...(typeof event.data === "string" ? { text_data: event.data } : {}),
    ...(event.data instanceof Uint8Array ? { data_base64: Buffer.from(event.data).toString("base64") } : {}),
    receivedAt: new Date(event.receivedAt).toISOString()
  }
}

const failureError = (context: HandlerContext, failure: FailureSpec): ConnectError => {
  const code = toCode(failure.status)
  const metadata: Record<string, string> = {}
  if (failure.pushbackMs !== undefined) metadata["grpc-retry-pushback-ms"] = String(failure.pushbackMs)
  if (failure.retryAfter !== undefined) context.responseHeader.set("retry-after", String(failure.retryAfter))
  const details = failure.retryInfoMs === undefined
    ? []
    : [{ desc: RetryInfoSchema, value: { retryDelay: durationFromMs(failure.retryInfoMs) } }]
  return new ConnectError(failure.message ?? `injected failure (${Code[code]})`, code, metadata, details)
}

/** Starts the server; resolves once it listens. */
export const startIngestServer = async (options: IngestServerOptions = {}): Promise<IngestServerHandle> => {
  const host = options.host ?? "127.0.0.1"
  const recordMode = options.record ?? "events"
  const random = options.random ?? Math.random
  const requestLogSize = options.requestLogSize ?? 100
  const state: FaultState = healthy()

  // ---- what was received
  let events: Array<ReceivedEvent> = []
  let ids = new Set<string>()
  let requests: Array<RequestRecord> = []
  const counters = { requests: 0, failedRequests: 0, abandonedRequests: 0, events: 0, rejectedEvents: 0, duplicates: 0, bytes: 0 }
  const stats = (): IngestStats => ({
    ...counters,
    uniqueIds: recordMode === "counts" ? null : ids.size,
    duplicates: recordMode === "counts" ? null : counters.duplicates
  })
  const statWaiters = new Set<() => void>()
  const notifyStats = () => {
    for (const check of [...statWaiters]) check()
  }
  const jsonl = options.jsonl === undefined ? undefined : fs.createWriteStream(options.jsonl, { flags: "a" })
  const sample = options.sample === undefined ? undefined : makeEventSample(options.sample)

  const record = (event: ReceivedEvent) => {
    counters.events++
    counters.bytes += event.payload.byteLength
    if (recordMode !== "counts") {
      if (ids.has(event.id)) counters.duplicates++
      else ids.add(event.id)
    }
    if (recordMode === "events") events.push(event)
    sample?.record(event)
    jsonl?.write(JSON.stringify(receivedEventJson(event)) + "\n")
  }

  const received: IngestReceived = {
    get events() {
      return events
    },
    get stats() {
      return stats()
    },
    get ids() {
      return ids
    },
    sample,
    get requests() {
      return requests
    },
    waitFor: (predicate, timeoutMs = 5_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const s = stats()
          if (!predicate(s)) return
          statWaiters.delete(check)
          clearTimeout(timer)
          resolve(s)
        }
        const timer = setTimeout(() => {
          statWaiters.delete(check)
          reject(new Error(`ingest server: condition not met within ${timeoutMs} ms; stats ${JSON.stringify(stats())}`))
        }, timeoutMs)
        statWaiters.add(check)
        check()
      }),
    waitForEvents: (count, timeoutMs) => received.waitFor((s) => s.events >= count, timeoutMs),
    clear: () => {
      events = []
      ids = new Set()
      requests = []
      sample?.clear()
      Object.assign(counters, { requests: 0, failedRequests: 0, abandonedRequests: 0, events: 0, rejectedEvents: 0, duplicates: 0, bytes: 0 })
    }
  }

  // ---- held requests (hang)
  let closed = false
  const holders = new Set<() => void>()
  const wake = () => {
    for (const release of [...holders]) release()
  }
  const holdWhileHanging = async (signal: AbortSignal) => {
    while (state.hang && !signal.aborted && !closed) {
      await new Promise<void>((resolve) => {
        const release = () => {
          holders.delete(release)
          signal.removeEventListener("abort", release)
          resolve()
        }
        holders.add(release)
        signal.addEventListener("abort", release)
      })
    }
    if (signal.aborted || closed) throw abandoned("the client gave up while the server was hanging")
  }

  const abandoned = (message: string) => {
    counters.abandonedRequests++
    notifyStats()
    return new ConnectError(message, Code.Aborted)
  }
  const sleep = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer)
        reject(abandoned("the client gave up during the injected latency"))
      }
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort)
        resolve()
      }, ms)
      signal.addEventListener("abort", onAbort, { once: true })
    })

  // ---- faults
  const takeFailure = (): FailureSpec | undefined => {
    const next = state.failNext
    if (next !== undefined && next.count > 0) {
      next.count--
      if (next.count <= 0) state.failNext = undefined
      return next.failure
    }
    const fraction = state.failFraction
    if (fraction !== undefined && random() < fraction.fraction) return fraction.failure
    return undefined
  }
  const takeReset = (when: "before" | "after") => {
    const reset = state.reset
    if (reset === undefined || reset.when !== when || reset.count <= 0) return undefined
    const taken = reset
    if (reset.count !== Infinity) {
      const left = reset.count - 1
      state.reset = left > 0 ? { ...reset, count: left } : undefined
    }
    return taken
  }
  const resetNow = (context: HandlerContext, how: "socket" | "stream"): never => {
    const request = context.values.get(rawRequestKey)
    if (request !== undefined) {
      if (how === "socket") request.stream.session?.destroy()
      else request.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
    }
    // Aborted: connect's node adapter does not log it, and nothing more is written.
    throw new ConnectError("injected connection reset", Code.Aborted)
  }

  const refusal = (context: HandlerContext): ConnectError | undefined => {
    if (state.down === "unavailable") return new ConnectError("ingest is down", Code.Unavailable)
    const required = state.requireAuthorization
    if (required !== undefined && context.requestHeader.get("authorization") !== required) {
      return new ConnectError("missing or invalid credentials", Code.Unauthenticated)
    }
    return undefined
  }

  /** Whether anything keeps or inspects whole events (else only their envelope is read). */
  const wholeEvents = () => recordMode === "events" || jsonl !== undefined || state.rejectPredicates.length > 0

  const rejectionOf = (event: ReceivedEvent): Rejection | undefined => {
    const invalid = validateEvent(event)
    if (invalid !== undefined) return invalid
    for (const rule of state.rejectRules) {
      if (
        (rule.type === undefined || rule.type === event.type) &&
        (rule.source === undefined || rule.source === event.source) &&
        (rule.id === undefined || rule.id === event.id)
      ) return { code: rule.code, reason: rule.reason ?? `rejected by rule (${rule.code})` }
    }
    for (const predicate of state.rejectPredicates) {
      const rejection = predicate(event)
      if (rejection !== undefined) return rejection
    }
    return undefined
  }

  const publish = async (
    method: RequestRecord["method"],
    payloads: ReadonlyArray<Uint8Array>,
    bytes: number,
    transaction: boolean,
    context: HandlerContext
  ): Promise<PublishResponse> => {
    const now = Date.now()
    counters.requests++
    const headers: Record<string, string> = {}
    context.requestHeader.forEach((value, key) => {
      headers[key] = value
    })
    requests.push({ method, receivedAt: now, events: payloads.length, bytes, encoding: headers["grpc-encoding"] ?? "identity", headers })
    if (requests.length > requestLogSize) requests = requests.slice(-requestLogSize)
    notifyStats()

    try {
      const refused = refusal(context)
      if (refused !== undefined) throw refused
      const limit = state.maxRequestBytes
      if (limit !== undefined && bytes > limit.limit) {
        throw new ConnectError(`request of ${bytes} bytes exceeds the limit of ${limit.limit} bytes`, toCode(limit.status))
      }
      const resetBefore = takeReset("before")
      if (resetBefore !== undefined) resetNow(context, resetBefore.how)
      if (state.latencyMs > 0) await sleep(state.latencyMs, context.signal)
      await holdWhileHanging(context.signal)
      const failure = takeFailure()
      if (failure !== undefined) throw failureError(context, failure)
    } catch (error) {
      if (!(error instanceof ConnectError && error.code === Code.Aborted)) counters.failedRequests++
      notifyStats()
      throw error
    }

    const results: Array<PublishResult> = []
    const accepted: Array<ReceivedEvent> = []
    let rejected = 0
    for (const payload of payloads) {
      let event: ReceivedEvent | undefined
      let rejection: Rejection | undefined
      try {
        event = wholeEvents() ? toReceived(fromBinary(CloudEventSchema, payload), payload, now) : headOf(payload, now)
        rejection = rejectionOf(event)
      } catch (error) {
        rejection = { code: "VALIDATION_FAILED", reason: `not a CloudEvent: ${error instanceof Error ? error.message : String(error)}` }
      }
      const result = create(PublishResultSchema, { eventId: event?.id ?? "" })
      if (rejection !== undefined) {
        rejected++
        result.error = create(PublishErrorSchema, { errorCode: publishErrorCodes[rejection.code], reason: rejection.reason })
      } else if (event !== undefined) accepted.push(event)
      results.push(result)
    }
    if (transaction && rejected > 0) {
      // All or nothing: every event of the batch is reported as not produced.
      for (const result of results) {
        result.error ??= create(PublishErrorSchema, {
          errorCode: PublishErrorCode.UNKNOWN,
          reason: "transaction aborted: another event of the batch was rejected"
        })
      }
      rejected = results.length
      accepted.length = 0
    }
    counters.rejectedEvents += rejected
    for (const event of accepted) record(event)
    notifyStats()

    const resetAfter = takeReset("after")
    if (resetAfter !== undefined) resetNow(context, resetAfter.how)

    const mode = state.results
    const answered = mode === "full" ? results : mode === "empty" ? [] : results.slice(0, mode.count)
    return create(PublishResponseSchema, { results: answered })
  }

  const handler = connectNodeAdapter({
    // Compressed requests are accepted; responses are compressed only when asked for (like a
    // grpc-go server, which does not compress responses by default).
    compressMinBytes: options.compressResponses === true ? 1024 : 0xffff_ffff,
    contextValues: (request) =>
      createContextValues().set(rawRequestKey, "stream" in request ? request : undefined),
    routes: (router) => {
      // Registered first: the service registers every method (PublishBatch as "unimplemented"),
      // and the raw PublishBatch below replaces that path.
      router.service(ChipIngress, {
        publish: (event, context) => {
          const payload = toBinary(CloudEventSchema, event)
          return publish("Publish", [payload], payload.byteLength, false, context)
        },
        ping: (_request, context) => {
          const refused = refusal(context)
          if (refused !== undefined) throw refused
          return { message: options.pingMessage ?? "pong" }
        }
      })
      router.rpc(rawPublishBatch, (batch: RawCloudEventBatch, context) => {
        const optionsBytes = batch.options.byteLength
        const bytes = batchRequestBytes(batch.events) + (optionsBytes > 0 ? eventRequestBytes(batch.options) : 0)
        const options = optionsBytes > 0 ? fromBinary(PublishOptionsSchema, batch.options) : undefined
        return publish("PublishBatch", batch.events, bytes, options?.transactionEnabled === true, context)
      })
    }
  })

  // ---- the listener
  // HTTP/2 flow control: with the default 64 KiB windows, every request over 64 KiB waits a round
  // trip for a WINDOW_UPDATE. Real gRPC servers grow their windows (BDP probing); we start large.
  const settings = { initialWindowSize: 4 * 1024 * 1024 }
  const server: http2.Http2Server | http2.Http2SecureServer = options.tls === undefined
    ? http2.createServer({ settings }, handler)
    : http2.createSecureServer({ settings, key: options.tls.key, cert: options.tls.cert }, handler)
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on("session", (session) => {
    session.setLocalWindowSize(16 * 1024 * 1024)
    sessions.add(session)
    session.on("close", () => {
      sessions.delete(session)
      notifyStats()
    })
    session.on("error", () => {})
  })
  let port = options.port ?? 0
  let listening = false
  const start = () =>
    new Promise<void>((resolve, reject) => {
      if (listening) return resolve()
      const onError = (error: Error) => reject(error)
      server.once("error", onError)
      server.listen(port, host, () => {
        server.off("error", onError)
        listening = true
        port = (server.address() as AddressInfo).port
        resolve()
      })
    })
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const session of sessions) session.destroy()
      if (!listening) return resolve()
      listening = false
      server.close(() => resolve())
    })

  const faults = makeFaults(state, { start, stop, wake })
  await start()
  if (options.faults !== undefined) await faults.apply(options.faults)

  const url = `${options.tls === undefined ? "http" : "https"}://${host.includes(":") ? `[${host}]` : host}:${port}`
  return {
    url,
    port,
    received,
    faults,
    connections: () => sessions.size,
    close: async () => {
      if (closed) return
      closed = true
      wake()
      await stop()
      if (jsonl !== undefined) await new Promise<void>((resolve) => jsonl.end(() => resolve()))
    }
  }
}

export class IngestServerError extends Schema.TaggedError<IngestServerError>()("IngestServerError", {
  reason: Schema.String
}) {
  override get message() {
    return `ingest server: ${this.reason}`
  }
}

/** The Effect face of the reference ingest server: the handle as a service, closed with its scope. */
export class IngestServer extends Context.Service<IngestServer, IngestServerHandle>()("durable-emitter/testing/IngestServer") {
  static readonly make = (options: IngestServerOptions = {}): Effect.Effect<IngestServerHandle, IngestServerError, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.tryPromise({
        try: () => startIngestServer(options),
        catch: (error) => new IngestServerError({ reason: error instanceof Error ? error.message : String(error) })
      }),
      (handle) => Effect.promise(() => handle.close())
    )

  static readonly layer = (options: IngestServerOptions = {}): Layer.Layer<IngestServer, IngestServerError> =>
    Layer.effect(IngestServer, IngestServer.make(options))
}
