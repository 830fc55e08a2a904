/**
 * Pure mapping from what a PublishBatch call produced (a response, or a ConnectError) to the
 * Transport port's vocabulary: `EventResult[]` or a `TransportError`, with the server's push-back.
 */
import { Code, ConnectError } from "@connectrpc/connect"
import { durationMs } from "@bufbuild/protobuf/wkt"
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire"
import { Duration, Result } from "effect"
import { Headers } from "effect/http"
import type { PublishResponse } from "../gen/chipingress/pb/chip_ingress_pb.js"
import { PublishErrorCode } from "../gen/chipingress/pb/chip_ingress_pb.js"
import { RetryInfoSchema } from "../gen/google/rpc/retry_info_pb.js"
import { delivered, type EventResult, TransportError } from "../Transport.ts"

export type ErrorKind = TransportError["kind"]

/** gRPC status code names as the gRPC spec spells them, lower-cased: `resource_exhausted`. The one table of them. */
const codeNames: Readonly<Record<number, string>> = {
  [Code.Canceled]: "canceled",
  [Code.Unknown]: "unknown",
  [Code.InvalidArgument]: "invalid_argument",
  [Code.DeadlineExceeded]: "deadline_exceeded",
  [Code.NotFound]: "not_found",
  [Code.AlreadyExists]: "already_exists",
  [Code.PermissionDenied]: "permission_denied",
  [Code.ResourceExhausted]: "resource_exhausted",
  [Code.FailedPrecondition]: "failed_precondition",
  [Code.Aborted]: "aborted",
  [Code.OutOfRange]: "out_of_range",
  [Code.Unimplemented]: "unimplemented",
  [Code.Internal]: "internal",
  [Code.Unavailable]: "unavailable",
  [Code.DataLoss]: "data_loss",
  [Code.Unauthenticated]: "unauthenticated"
}

export const grpcCodeName = (code: Code): string => codeNames[code] ?? `code_${code}`

/** The table read the other way, with the British spelling grpc-go also accepts. */
const codesByName: ReadonlyMap<string, Code> = new Map([
  ...Object.entries(codeNames).map(([code, name]) => [name, Number(code) as Code] as const),
  ["cancelled", Code.Canceled]
])

/** `Code` for a status name in any case (`"unavailable"`, `"RESOURCE_EXHAUSTED"`); undefined for names it does not know. */
export const grpcCodeOf = (name: string): Code | undefined => codesByName.get(name.toLowerCase())

/**
 * Whether a whole-request failure with this gRPC code can succeed later.
 * Configuration faults keep the rows and raise an alarm; permanent ones dead-letter the batch, so
 * only codes that say "this request is bad" are permanent. Anything unclear is retryable: a
 * retry costs a duplicate at worst, a wrong dead letter takes events out of the normal flow.
 */
export const kindOfCode = (code: Code): ErrorKind => {
  switch (code) {
    case Code.Unauthenticated:
    case Code.PermissionDenied:
    case Code.Unimplemented:
      return "config"
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
    case Code.NotFound:
    case Code.AlreadyExists:
      return "permanent"
    default:
      // Unavailable, ResourceExhausted, DeadlineExceeded, Aborted, Internal, Unknown, Canceled, DataLoss
      return "retryable"
  }
}

/** `VALIDATION_FAILED` for 1; numbers this build does not know become `UNRECOGNIZED_<n>`. */
export const publishErrorCodeName = (code: number): string =>
  (PublishErrorCode as unknown as Record<number, string | undefined>)[code] ?? `UNRECOGNIZED_${code}`

const decoder = new TextDecoder()

/** The CloudEvent id (field 1) of an encoded event, if it has one. */
export const eventIdOf = (payload: Uint8Array): string | undefined => {
  try {
    const reader = new BinaryReader(payload)
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag()
      if (field === 1 && wireType === WireType.LengthDelimited) return decoder.decode(reader.bytes())
      reader.skip(wireType, field)
    }
  } catch {
    // not a decodable CloudEvent: it has no id
  }
  return undefined
}

/**
 * Whether `id` is the CloudEvent id of the encoded event. Events this library encodes start with
 * their id, compared byte by byte without decoding; anything else is scanned for it.
 */
export const hasEventId = (payload: Uint8Array, id: string): boolean => {
  if (payload[0] === 0x0a && payload[1]! < 0x80 && payload[1] === id.length) {
    let ascii = true
    for (let i = 0; i < id.length; i++) {
      const c = id.charCodeAt(i)
      if (c >= 0x80) {
        ascii = false
        break
      }
      if (payload[2 + i] !== c) return false
    }
    if (ascii) return true
  }
  return (eventIdOf(payload) ?? "") === id
}

const mismatch = (reason: string) => new TransportError({ kind: "retryable", code: "mismatch", reason })

/**
 * The per-event answer for a batch of `events`: an empty list means all were delivered (older
 * servers); otherwise `results[i]` answers `events[i]`: one result per event, and a result may
 * not name another event of the batch. Anything else is a mismatch (retryable: the server's
 * state is unknown, and a retry only risks duplicates, while taking answers for the wrong events
 * could delete or dead-letter an event that was not delivered). A result id that names no event
 * of the batch is taken as the server's own naming: the position decides.
 */
export const resultsOf = (
  events: ReadonlyArray<Uint8Array>,
  response: PublishResponse
): Result.Result<ReadonlyArray<EventResult>, TransportError> => {
  const results = response.results
  const eventCount = events.length
  if (results.length === 0) return Result.succeed(new Array<EventResult>(eventCount).fill(delivered))
  if (results.length !== eventCount) {
    return Result.fail(mismatch(`the server answered ${results.length} results for ${eventCount} events`))
  }
  const out = new Array<EventResult>(eventCount)
  let sentIds: ReadonlySet<string | undefined> | undefined
  for (let i = 0; i < eventCount; i++) {
    const result = results[i]!
    if (result.eventId !== "" && !hasEventId(events[i]!, result.eventId)) {
      sentIds ??= new Set(events.map(eventIdOf))
      if (sentIds.has(result.eventId)) {
        return Result.fail(mismatch(`result ${i} is for event ${JSON.stringify(result.eventId)}, sent at another position`))
      }
    }
    const error = result.error
    out[i] = error === undefined
      ? delivered
      : { _tag: "Rejected", code: publishErrorCodeName(error.errorCode), reason: error.reason }
  }
  return Result.succeed(out)
}

// ---------------------------------------------------------------------------------------------
// Push-back

export const headerPushbackMs = "grpc-retry-pushback-ms"
export const headerRetryAfter = "retry-after"

/**
 * `grpc-retry-pushback-ms`: a non-negative integer of milliseconds, or "never" for a negative
 * one (the gRPC retry design's "do not retry"); anything else is ignored.
 */
export const parsePushbackMs = (value: string | null | undefined): number | "never" | undefined => {
  if (value == null) return undefined
  const trimmed = value.trim()
  if (/^-\d+$/.test(trimmed)) return "never"
  if (!/^\d+$/.test(trimmed)) return undefined
  const ms = Number(trimmed)
  return Number.isSafeInteger(ms) ? ms : undefined
}

/** HTTP `Retry-After`: whole seconds or an HTTP-date, measured from `nowMs` (the Effect Clock). */
export const parseRetryAfterMs = (value: string | null | undefined, nowMs: number): number | undefined => {
  if (value == null) return undefined
  const parsed = Headers.parseRetryAfter(value)
  if (Result.isFailure(parsed)) return undefined
  const ms = Duration.toMillis(Headers.retryAfterDelay(parsed.success, nowMs))
  return Number.isFinite(ms) ? Math.ceil(ms) : undefined
}

/** A `google.rpc.RetryInfo` detail's delay; missing or negative delays are ignored. */
export const parseRetryInfoMs = (delay: { readonly seconds: bigint; readonly nanos: number } | undefined): number | undefined => {
  if (delay === undefined) return undefined
  const ms = durationMs({ ...delay, $typeName: "google.protobuf.Duration" })
  return Number.isFinite(ms) && ms >= 0 ? Math.ceil(ms) : undefined
}

/** The longest of the server's push-back signals, if it sent any valid one. */
export const largestPushBack = (candidates: ReadonlyArray<number | undefined>): number | undefined => {
  let max: number | undefined
  for (const c of candidates) if (c !== undefined && (max === undefined || c > max)) max = c
  return max
}

/**
 * Every push-back a failed call carried: the `grpc-retry-pushback-ms` trailer, `Retry-After`
 * (connect merges response headers and trailers into `metadata`) and RetryInfo details.
 */
export const pushBackMsOf = (error: ConnectError, nowMs: number): number | "never" | undefined => {
  const trailer = parsePushbackMs(error.metadata.get(headerPushbackMs))
  if (trailer === "never") return "never"
  const candidates: Array<number | undefined> = [trailer, parseRetryAfterMs(error.metadata.get(headerRetryAfter), nowMs)]
  for (const info of error.findDetails(RetryInfoSchema)) candidates.push(parseRetryInfoMs(info.retryDelay))
  return largestPushBack(candidates)
}

// ---------------------------------------------------------------------------------------------
// Errors

/** The first Node.js error code (ECONNRESET, ERR_HTTP2_…, CERT_HAS_EXPIRED) in the cause chain, if any. */
export const nodeErrorCode = (error: unknown): string | undefined => {
  const seen = new Set<unknown>()
  let current = error
  while (current instanceof Error && !seen.has(current)) {
    seen.add(current)
    const code = (current as { code?: unknown }).code
    if (typeof code === "string" && /^[A-Z][A-Z0-9_]+$/.test(code)) return code
    current = current.cause
  }
  return undefined
}

/** Certificate and TLS handshake failures: a retry will not fix them, a configuration change will. */
export const isTlsErrorCode = (code: string): boolean =>
  /^(ERR_TLS_|ERR_SSL_)|CERT|SELF_SIGNED|UNABLE_TO_(VERIFY|GET)|HOSTNAME_MISMATCH/.test(code)

/** Whether connect raised the error because the client-side deadline passed (not a server status). */
const isClientDeadline = (error: ConnectError): boolean => error.code === Code.DeadlineExceeded && !error.isWireError

/**
 * Maps whatever a call threw to a TransportError, reading push-back relative to `nowMs`.
 * Local failures below gRPC are "network" (retryable) or, for certificate problems, "tls" (config).
 */
export const transportErrorOf = (cause: unknown, nowMs: number): TransportError => {
  const error = ConnectError.from(cause)
  const local = error.isWireError ? undefined : nodeErrorCode(error)
  const tls = local !== undefined && isTlsErrorCode(local)
  const code = isClientDeadline(error)
    ? "timeout"
    : local === undefined
    ? grpcCodeName(error.code)
    : tls
    ? "tls"
    : "network"
  const kind: ErrorKind = local === undefined ? kindOfCode(error.code) : tls ? "config" : "retryable"
  const pushBack = kind === "retryable" ? pushBackMsOf(error, nowMs) : undefined
  const message = error.rawMessage || grpcCodeName(error.code)
  const reason = local !== undefined && !message.includes(local) ? `${message} (${local})` : message
  if (pushBack === "never") return new TransportError({ kind, code, reason, doNotRetry: true })
  return new TransportError(pushBack === undefined ? { kind, code, reason } : { kind, code, reason, retryAfterMs: pushBack })
}

/** The backstop: the call did not settle within the request timeout. */
export const timeoutError = (timeoutMs: number): TransportError =>
  new TransportError({ kind: "retryable", code: "timeout", reason: `no answer within ${timeoutMs} ms` })
