/**
 * The kinds of value an option can hold. A kind says how a value given in code is checked and
 * turned into its resolved form, how an environment variable's text is parsed, and how a
 * resolved value is shown (logs, the config-info gauge, the README's defaults). Nothing is
 * rewritten silently: a value is taken as it is or refused with the rule it breaks.
 */
import * as path from "node:path"
import { Duration, Option, Redacted, Result } from "effect"
import { databaseUrlRule } from "../store/databaseUrl.ts"

/** A refusal: the rule the value breaks, in words that follow the option's name. */
export type Decoded<A> = Result.Result<A, string>

export interface Kind<I, A, Millis extends boolean = false> {
  /** A value given in code (or parsed from the environment); `undefined` only for optional kinds. */
  readonly decode: (input: unknown) => Decoded<A>
  /** An environment variable's text (never empty: empty values are refused before). */
  readonly parse: (text: string) => Decoded<I>
  /** For logs and the config-info gauge: never a secret. */
  readonly show: (value: A) => string
  /** The resolved value is in milliseconds and its key ends in `Ms` (`requestTimeout` → `requestTimeoutMs`). */
  readonly millis: Millis
}

const ok = Result.succeed
const refuse = (rule: string): Decoded<never> => Result.fail(rule)
const quoted = (text: string) => JSON.stringify(text.length > 60 ? `${text.slice(0, 57)}...` : text)

/** A count or size: a positive integer. */
export const count: Kind<number, number> = {
  decode: (v) => typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? ok(v) : refuse("must be a positive integer"),
  parse: (text) => /^[0-9]+$/.test(text) ? ok(Number(text)) : refuse(`must be a positive integer (digits only), got ${quoted(text)}`),
  show: String,
  millis: false
}

const durationHint = "e.g. \"5 seconds\" or \"250 millis\""

/** A duration; `zero` says whether 0 is allowed (lingers). Resolved in milliseconds. */
export const duration = (zero: "zero allowed" | "positive"): Kind<Duration.Input, number, true> => ({
  decode: (v) => {
    const d = Duration.fromInput(v as Duration.Input)
    if (Option.isNone(d)) return refuse(`must be a duration (${durationHint}, or a number of milliseconds)`)
    const ms = Duration.toMillis(d.value)
    if (zero === "positive") return Number.isFinite(ms) && ms > 0 ? ok(ms) : refuse("must be a positive, finite duration")
    return Number.isFinite(ms) && ms >= 0 ? ok(ms) : refuse("must be zero or a positive, finite duration")
  },
  parse: (text) =>
    Option.isSome(Duration.fromInput(text as Duration.Input)) ? ok(text as Duration.Input) : refuse(`must be a duration (${durationHint}), got ${quoted(text)}`),
  show: (ms) => formatMillis(ms),
  millis: true
})

const trueWords = new Set(["true", "yes", "on", "1", "y"])
const falseWords = new Set(["false", "no", "off", "0", "n"])

export const boolean: Kind<boolean, boolean> = {
  decode: (v) => typeof v === "boolean" ? ok(v) : refuse("must be true or false"),
  parse: (text) =>
    trueWords.has(text) ? ok(true) : falseWords.has(text) ? ok(false) : refuse(`must be true or false (or yes/no, on/off, 1/0), got ${quoted(text)}`),
  show: String,
  millis: false
}

/** A string that must not be empty, optionally with a rule of its own. */
export const text = (rule?: (value: string) => string | undefined): Kind<string, string> => ({
  decode: (v) => {
    if (typeof v !== "string" || v.length === 0) return refuse("must be a non-empty string")
    const broken = rule?.(v)
    return broken === undefined ? ok(v) : refuse(broken)
  },
  parse: ok,
  show: (v) => v,
  millis: false
})

/** The `dataDir` of an in-memory embedded store (see PgliteStore.memory). */
const memoryDir = "memory://"

/**
 * A directory, made absolute once, when the options are resolved: the working directory may
 * change later, and logs should say where the data is.
 */
export const directory: Kind<string, string> = {
  decode: (v) => typeof v !== "string" || v.length === 0
    ? refuse("must be a non-empty string")
    : ok(v === memoryDir ? v : path.resolve(v)),
  parse: ok,
  show: (v) => v,
  millis: false
}

/** Whether a URL's text is one `new URL` takes, and its scheme (lower case: schemes are case-insensitive). */
const parseUrl = (value: string): URL | undefined => {
  try {
    return new URL(value)
  } catch {
    return undefined
  }
}

/** The ingest endpoint: an http:// (h2c) or https:// URL with a host. */
export const httpUrl: Kind<string, string> = text((value) => {
  const url = parseUrl(value)
  if (url === undefined || url.host === "") return `must be an http:// (h2c) or https:// URL, got ${quoted(value)}`
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `must be an http:// (h2c) or https:// URL, got scheme ${url.protocol.slice(0, -1)}`
  }
  return undefined
})

/** A secret PostgreSQL URL; absent means "use the embedded store". */
export const databaseUrl: Kind<string | Redacted.Redacted<string>, Option.Option<Redacted.Redacted<string>>> = {
  decode: (v) => {
    if (v === undefined) return ok(Option.none())
    const plain: unknown = Redacted.isRedacted(v) ? Redacted.value(v) : v
    if (typeof plain !== "string") return refuse("must be a string (a postgres:// URL)")
    const broken = databaseUrlRule(plain)
    return broken === undefined ? ok(Option.some(Redacted.make(plain))) : refuse(broken)
  },
  parse: (text) => ok(Redacted.make(text)),
  show: (v) => Option.isSome(v) ? "postgres" : "pglite",
  millis: false
}

/** RFC 9110 field-name (token); HTTP/2 wants it lower case, which we do for the user. */
const headerName = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** A field value may not hold CR, LF or NUL (they would split or end the header). */
const headerValue = /^[^\r\n\0]*$/

export type Headers = Readonly<Record<string, Redacted.Redacted<string>>>

/** Request headers; values are secrets. In the environment: `name=value,name=value`. */
export const headers: Kind<Readonly<Record<string, string | Redacted.Redacted<string>>>, Headers> = {
  decode: (v) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return refuse("must be an object of header names to values")
    const out: Record<string, Redacted.Redacted<string>> = {}
    for (const [name, raw] of Object.entries(v)) {
      if (!headerName.test(name)) return refuse(`has an invalid header name ${quoted(name)} (letters, digits and !#$%&'*+-.^_\`|~ only)`)
      const value = Redacted.isRedacted(raw) ? Redacted.value(raw) : raw
      if (typeof value !== "string") return refuse(`header ${name}: the value must be a string`)
      if (!headerValue.test(value)) return refuse(`header ${name}: the value must not contain a line break or NUL`)
      out[name.toLowerCase()] = Redacted.isRedacted(raw) ? raw as Redacted.Redacted<string> : Redacted.make(value)
    }
    return ok(out)
  },
  parse: (text) => {
    const out: Record<string, Redacted.Redacted<string>> = {}
    for (const pair of text.split(",")) {
      const at = pair.indexOf("=")
      if (at <= 0) return refuse("must be name=value pairs separated by commas (e.g. authorization=Bearer x,x-tenant=t1)")
      out[pair.slice(0, at).trim()] = Redacted.make(pair.slice(at + 1).trim())
    }
    return ok(out)
  },
  show: (v) => Object.keys(v).join(","),
  millis: false
}

/** "5 s", "20 ms", "1 min", "24 h": the README's and the logs' form of a duration. */
export const formatMillis = (ms: number): string => {
  if (ms === 0) return "0"
  const units: ReadonlyArray<readonly [number, string]> = [[86_400_000, "d"], [3_600_000, "h"], [60_000, "min"], [1_000, "s"]]
  for (const [size, unit] of units) {
    if (ms % size === 0 && !(unit === "d" && ms / size === 1)) return `${ms / size} ${unit}`
  }
  return `${ms} ms`
}
