/**
 * The Transport over gRPC (HTTP/2; h2c for `http://`, TLS for `https://`), speaking the Chip
 * Ingress API with connect-es. One HTTP/2 connection per layer, closed when the layer's scope
 * closes. Stored CloudEvent bytes go on the wire as they are (see ./rawBatch.ts).
 */
import type * as http2 from "node:http2"
import type { Transport as ConnectTransport } from "@connectrpc/connect"
import { compressionBrotli, compressionGzip, createGrpcTransport, Http2SessionManager, type Http2SessionOptions } from "@connectrpc/connect-node"
import { type Context, Clock, Duration, Effect, Layer, Option, Redacted, Result } from "effect"
import { defaults } from "../config/options.ts"
import { InvalidConfig } from "../Errors.ts"
import { ChipIngress } from "../gen/chipingress/pb/chip_ingress_pb.js"
import { type EventResult, type PublishOptions, Transport, TransportError } from "../Transport.ts"
import { resultsOf, timeoutError, transportErrorOf } from "./outcome.ts"
import { batchRequestBytes, eventRequestBytes, rawBatch, rawPublishBatch } from "./rawBatch.ts"

export type HeaderValue = string | Redacted.Redacted<string>
export type HeaderRecord = Readonly<Record<string, HeaderValue>>

export interface GrpcTransportOptions<R = never> {
  /** `http://host:port` (h2c) or `https://host:port` (TLS), optionally with a path prefix. */
  readonly url: string
  /**
   * Request metadata, e.g. `{ authorization: Redacted.make("Bearer …") }`. An Effect is run for
   * every request (rotating tokens); its failure fails that request.
   */
  readonly headers?: HeaderRecord | Effect.Effect<HeaderRecord, TransportError, R>
  /** Compress requests with gzip, and accept gzip- or brotli-compressed responses. Default false. */
  readonly gzip?: boolean
  /**
   * Per-request deadline (sent as `grpc-timeout` and enforced locally). Default: the emitter's
   * `requestTimeout` default (5 seconds), which the Publisher's lease rules assume.
   */
  readonly timeout?: Duration.Input
  /**
   * The server's request size limit. A batch above it is split into several requests (in order),
   * and an event that alone exceeds it is answered `Rejected` with code `REQUEST_TOO_LARGE`.
   * The Publisher is expected to split batches itself; this is the safety net (each of the split
   * requests has its own timeout, and if one fails the whole call fails, so events of earlier
   * requests may be delivered twice on retry). Default: none.
   */
  readonly maxRequestBytes?: number
  /** Passed to `http2.connect` (CA, client certificate, servername, …). */
  readonly nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions
  /** HTTP/2 keep-alive (PING) and idle-connection settings. */
  readonly http2?: Http2SessionOptions
}

/** The emitter's `requestTimeout` default: one default for the deadline the lease rules assume. */
export const defaultTimeout = Duration.millis(defaults.requestTimeoutMs)

const ignore = () => {}

/**
 * Works around connectrpc/connect-es#1768 (open in connect-node 2.2.0): a GOAWAY on an idle
 * connection (load balancers send one after a few idle minutes; our test server on shutdown)
 * destroys the session with an error that Node.js emits later; if the manager has moved on to a
 * new connection by then, nobody listens and the process dies of an uncaught exception. Every
 * session that carried a request keeps a listener that swallows that late error (connect has
 * already handled the connection's failure through its own listeners).
 */
class GuardedSessionManager extends Http2SessionManager {
  readonly #guarded = new WeakSet<http2.Http2Session>()
  override async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options)
    const session = stream.session
    if (session !== undefined && !this.#guarded.has(session)) {
      this.#guarded.add(session)
      session.on("error", ignore)
    }
    return stream
  }
}

/** The gRPC retry header (gRFC A6): how many attempts of this request came before. */
export const previousAttemptsHeader = "grpc-previous-rpc-attempts"

/** Room the local backstop leaves for connect's own deadline to fire first, with its clearer error. */
const backstopGraceMs = 50

const validate = (options: GrpcTransportOptions<unknown>): Result.Result<{ url: URL; timeoutMs: number }, InvalidConfig> => {
  let url: URL
  try {
    url = new URL(options.url)
  } catch {
    return Result.fail(new InvalidConfig({ option: "url", rule: `not a URL: ${JSON.stringify(options.url)}` }))
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return Result.fail(new InvalidConfig({ option: "url", rule: `must be http:// (h2c) or https:// (TLS), got ${url.protocol}` }))
  }
  const timeoutMs = Option.match(Duration.fromInput(options.timeout ?? defaultTimeout), {
    onNone: () => NaN,
    onSome: Duration.toMillis
  })
  if (!(timeoutMs > 0 && Number.isFinite(timeoutMs))) {
    return Result.fail(new InvalidConfig({ option: "timeout", rule: "must be a positive, finite duration" }))
  }
  const max = options.maxRequestBytes
  if (max !== undefined && !(Number.isSafeInteger(max) && max > 0)) {
    return Result.fail(new InvalidConfig({ option: "maxRequestBytes", rule: "must be a positive integer" }))
  }
  return Result.succeed({ url, timeoutMs: Math.ceil(timeoutMs) })
}

const plainHeaders = (headers: HeaderRecord): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(headers)) out[key] = Redacted.isRedacted(value) ? Redacted.value(value) : value
  return out
}

/** Builds the Transport; the HTTP/2 connection lives until the enclosing scope closes. */
export const make = Effect.fnUntraced(function*<R = never>(options: GrpcTransportOptions<R>) {
  const { timeoutMs, url } = yield* Effect.fromResult(validate(options))
  const context: Context.Context<R> = yield* Effect.context<R>()

  const session = yield* Effect.acquireRelease(
    Effect.sync(() => new GuardedSessionManager(url, options.http2 ?? {}, options.nodeOptions)),
    (session) => Effect.sync(() => session.abort())
  )
  const connect: ConnectTransport = createGrpcTransport({
    baseUrl: options.url,
    sessionManager: session,
    // Without gzip, do not advertise compressed responses either: connect-node servers would
    // otherwise gzip every response over 1 KiB (the results list), costing CPU on both ends.
    ...(options.gzip === true
      ? { sendCompression: compressionGzip, acceptCompression: [compressionGzip, compressionBrotli] }
      : { acceptCompression: [] })
  })

  const headersOption = options.headers
  const requestHeaders: Effect.Effect<Record<string, string> | undefined, TransportError> =
    headersOption === undefined
      ? Effect.succeed(undefined)
      : Effect.isEffect(headersOption)
      ? Effect.map(Effect.provideContext(headersOption, context), plainHeaders)
      : Effect.succeed(plainHeaders(headersOption))

  /** One unary call: headers, the request, both deadlines, errors mapped. */
  const call = <A>(run: (signal: AbortSignal, headers: Record<string, string> | undefined) => Promise<A>, previousAttempts = 0) =>
    (previousAttempts > 0
      ? Effect.map(requestHeaders, (headers): Record<string, string> | undefined => ({ ...headers, [previousAttemptsHeader]: String(previousAttempts) }))
      : requestHeaders).pipe(
      Effect.flatMap((headers) =>
        Effect.tryPromise({
          try: (signal) => run(signal, headers),
          catch: (cause) => cause
        })
      ),
      Effect.catch((cause) =>
        cause instanceof TransportError
          ? Effect.fail(cause)
          : Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.fail(transportErrorOf(cause, now)))
      ),
      Effect.timeoutOrElse({
        duration: timeoutMs + backstopGraceMs,
        orElse: () => Effect.fail(timeoutError(timeoutMs))
      })
    )

  const send = (events: ReadonlyArray<Uint8Array>, previousAttempts: number): Effect.Effect<ReadonlyArray<EventResult>, TransportError> =>
    call((signal, headers) => connect.unary(rawPublishBatch, signal, timeoutMs, headers, rawBatch(events)), previousAttempts).pipe(
      Effect.flatMap((response) => Effect.fromResult(resultsOf(events, response.message)))
    )

  const maxRequestBytes = options.maxRequestBytes
  /** The safety net: requests under `maxRequestBytes`, sent one after another, results in order. */
  const sendSplit = Effect.fnUntraced(function*(events: ReadonlyArray<Uint8Array>, max: number, previousAttempts: number) {
    const results: Array<EventResult> = []
    let chunk: Array<Uint8Array> = []
    let chunkBytes = 0
    const flush = Effect.suspend(() => {
      const batch = chunk
      chunk = []
      chunkBytes = 0
      return batch.length === 0 ? Effect.void : Effect.map(send(batch, previousAttempts), (r) => void results.push(...r))
    })
    for (const event of events) {
      const bytes = eventRequestBytes(event)
      if (bytes > max) {
        yield* flush
        results.push({ _tag: "Rejected", code: "REQUEST_TOO_LARGE", reason: `the event needs ${bytes} request bytes, the limit is ${max}` })
        continue
      }
      if (chunkBytes + bytes > max) yield* flush
      chunk.push(event)
      chunkBytes += bytes
    }
    yield* flush
    return results
  })

  const publishBatch = Effect.fn("GrpcTransport.publishBatch")(function*(events: ReadonlyArray<Uint8Array>, publish?: PublishOptions) {
    if (events.length === 0) return []
    const bytes = batchRequestBytes(events)
    const previousAttempts = publish?.previousAttempts ?? 0
    yield* Effect.annotateCurrentSpan({ "publish.events": events.length, "publish.bytes": bytes })
    if (maxRequestBytes !== undefined && bytes > maxRequestBytes) return yield* sendSplit(events, maxRequestBytes, previousAttempts)
    return yield* send(events, previousAttempts)
  })

  const ping = call((signal, headers) => connect.unary(ChipIngress.method.ping, signal, timeoutMs, headers, {})).pipe(
    Effect.map((response) => response.message.message),
    Effect.withSpan("GrpcTransport.ping")
  )

  return Transport.of({ publishBatch, ping })
})

/** `Transport` over gRPC. Fails with InvalidConfig when the options are unusable. */
export const layer = <R = never>(options: GrpcTransportOptions<R>): Layer.Layer<Transport, InvalidConfig, R> =>
  Layer.effect(Transport, make(options))
