/**
 * The JSON form of the ingest server's faults, as an Effect Schema: what `--faults`, the control
 * endpoint (`POST /faults`) and `IngestServerOptions.faults` take. Decoding refuses unknown keys
 * (a typo such as `latencyMS` must not be accepted silently) and names the offending key.
 * The shapes of one fault (FailureSpec, RejectRule, ResetSpec, …) are declared here once; the
 * live state (./ingestFaults.ts) is typed from them.
 */
import { Code } from "@connectrpc/connect"
import { Schema } from "effect"
import { grpcCodeOf } from "../transport/outcome.ts"
import { PublishErrorCodeName } from "./ingestModel.ts"

/** A gRPC status: connect's `Code`, or its name in any case (`"unavailable"`, `"RESOURCE_EXHAUSTED"`). */
export const StatusInput = Schema.Union([
  Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 16 })),
  Schema.String.check(Schema.makeFilter((name) => grpcCodeOf(name) !== undefined || `unknown gRPC status: ${name}`))
])
export type StatusInput = Code | string

/** `Code` for a status given as a number or a name; throws on names it does not know. */
export const toCode = (status: StatusInput): Code => {
  if (typeof status === "number") return status
  const code = grpcCodeOf(status)
  if (code === undefined) throw new Error(`unknown gRPC status: ${status}`)
  return code
}

const NonNegative = Schema.Number.check(Schema.isGreaterThanOrEqualTo(0))

/** A whole-request failure, optionally with push-back in any of the three forms servers use. */
export const FailureSpec = Schema.Struct({
  status: StatusInput,
  message: Schema.optionalKey(Schema.String),
  /** Sent as the `grpc-retry-pushback-ms` trailer. */
  pushbackMs: Schema.optionalKey(Schema.Number),
  /** Sent as a `google.rpc.RetryInfo` status detail. */
  retryInfoMs: Schema.optionalKey(NonNegative),
  /** Sent as the HTTP `Retry-After` response header: seconds, or an HTTP-date string. */
  retryAfter: Schema.optionalKey(Schema.Union([Schema.Number, Schema.String]))
})
export type FailureSpec = typeof FailureSpec.Type

/** Rejects matching events (all given fields must match) with a per-event error. */
export const RejectRule = Schema.Struct({
  type: Schema.optionalKey(Schema.String),
  source: Schema.optionalKey(Schema.String),
  id: Schema.optionalKey(Schema.String),
  code: PublishErrorCodeName,
  reason: Schema.optionalKey(Schema.String)
})
export type RejectRule = typeof RejectRule.Type

export const ResetSpec = Schema.Struct({
  /** How many requests to reset (each one consumes one); `Infinity` = every request until cleared. */
  count: Schema.Number,
  /** "before": the events are not recorded; "after": recorded, but the answer is lost (duplicates on retry). */
  when: Schema.Literals(["before", "after"]),
  /** "socket": destroy the connection; "stream": RST_STREAM with INTERNAL_ERROR. */
  how: Schema.Literals(["socket", "stream"])
})
export type ResetSpec = typeof ResetSpec.Type

/** How the server shapes a successful answer: every result, none, or only the first `count`. */
export const ResultsMode = Schema.Union([Schema.Literals(["full", "empty"]), Schema.Struct({ count: NonNegative })])
export type ResultsMode = typeof ResultsMode.Type

export const DownMode = Schema.Literals(["unavailable", "refuse"])
export type DownMode = typeof DownMode.Type

export const MaxRequestBytes = Schema.Struct({ limit: NonNegative, status: StatusInput })
export type MaxRequestBytes = typeof MaxRequestBytes.Type

const clearable = <S extends Schema.Top>(schema: S) => Schema.optionalKey(Schema.NullOr(schema))

/** The serializable fault configuration (every field optional; `null` clears a field). */
export const FaultConfig = Schema.Struct({
  latencyMs: clearable(NonNegative),
  failNext: clearable(Schema.Struct({ count: NonNegative, failure: FailureSpec })),
  failFraction: clearable(Schema.Struct({ fraction: Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 })), failure: FailureSpec })),
  rejectRules: clearable(Schema.Array(RejectRule)),
  hang: clearable(Schema.Boolean),
  reset: clearable(Schema.Struct({
    count: Schema.optionalKey(ResetSpec.fields.count),
    when: Schema.optionalKey(ResetSpec.fields.when),
    how: Schema.optionalKey(ResetSpec.fields.how)
  })),
  /** "unavailable": answer UNAVAILABLE; "refuse": close the listener (connections are refused). */
  down: clearable(DownMode),
  /** A limit in bytes (answered RESOURCE_EXHAUSTED), or a limit and the status to answer. */
  maxRequestBytes: clearable(Schema.Union([
    NonNegative,
    Schema.Struct({ limit: NonNegative, status: Schema.optionalKey(StatusInput) })
  ])),
  results: clearable(ResultsMode),
  /** Requests without exactly this `authorization` header fail with UNAUTHENTICATED. */
  requireAuthorization: clearable(Schema.String)
})
export type FaultConfig = typeof FaultConfig.Type

export const faultConfigKeys: ReadonlyArray<string> = Object.keys(FaultConfig.fields)

/**
 * Decodes a fault configuration from JSON-shaped input; unknown keys are errors. The message names
 * the path of the first problem, and for an unknown top-level key the known key it resembles.
 */
export const decodeFaultConfig = (input: unknown): FaultConfig => {
  try {
    return Schema.decodeUnknownSync(FaultConfig, { onExcessProperty: "error" })(input)
  } catch (error) {
    throw new Error(faultConfigProblem(input, error))
  }
}

/** The known key a misspelt one most likely meant: the same but for case, or one starting the other ("hangs"). */
const resembling = (key: string): string | undefined => {
  const lower = key.toLowerCase()
  return faultConfigKeys.find((known) => known.toLowerCase() === lower) ??
    faultConfigKeys.find((known) => known.toLowerCase().startsWith(lower) || lower.startsWith(known.toLowerCase()))
}

const faultConfigProblem = (input: unknown, error: unknown): string => {
  if (typeof input === "object" && input !== null && !Array.isArray(input)) {
    const unknown = Object.keys(input).find((key) => !faultConfigKeys.includes(key))
    if (unknown !== undefined) {
      const like = resembling(unknown)
      return `unknown fault ${JSON.stringify(unknown)}${like === undefined ? "" : ` (did you mean ${JSON.stringify(like)}?)`}; ` +
        `the faults are ${faultConfigKeys.join(", ")}`
    }
  }
  const message = error instanceof Error ? error.message : String(error)
  return `invalid faults: ${message.replace(/\s*\n\s*/g, " ")}`
}

/** The status `maxRequestBytes` answers with unless told otherwise. */
export const defaultLimitStatus: Code = Code.ResourceExhausted
