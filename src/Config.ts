/**
 * Every option of the emitter: its type, its default, its environment variable, and the rules
 * checked when the layer is built. `DurableEmitter.layer` reads them from the environment
 * (`DATABASE_URL`, `DURABLE_EMITTER_INGEST_URL`, `DURABLE_EMITTER_<OPTION>`);
 * `DurableEmitter.layerWith(options)` takes them from code.
 */
import { Config, ConfigProvider, Duration, Effect, Option, Redacted } from "effect"
import { InvalidConfig } from "./Errors.ts"

/** A send starts only if its row's lease lasts this many request timeouts longer (see Publisher). */
export const leaseSlack = 1.25

/** The resolved options: every field set, durations in milliseconds. */
export interface EmitterOptions {
  /** Value of the `emitter` CloudEvent attribute and of metric/log annotations. */
  readonly name: string
  /** PostgreSQL URL; when absent the embedded PGlite store in `dataDir` is used. */
  readonly databaseUrl: Option.Option<Redacted.Redacted<string>>
  /** Data directory of the embedded store (only without `databaseUrl`). */
  readonly dataDir: string
  /** Prefix of the tables (`<prefix>_events`, `<prefix>_sequences`, `<prefix>_dead_letters`). */
  readonly tablePrefix: string
  /** PostgreSQL connection pool size. */
  readonly maxConnections: number

  /** Largest encoded CloudEvent accepted by `emit`. */
  readonly maxEventBytes: number
  /** Most events in one commit (one insert statement). */
  readonly writeBatchSize: number
  /** How long the write path waits to fill a commit batch once the first event is there (0 = no wait). */
  readonly writeLingerMs: number
  /** Emits waiting for a commit (an `emitAll` counts once); when full, `emit` waits up to `enqueueTimeout`. */
  readonly writeQueueCapacity: number
  /** Commits in flight at once. */
  readonly writeConcurrency: number
  /** How long `emit` waits for room in a full write queue before failing with EmitterOverloaded. */
  readonly enqueueTimeoutMs: number
  /** How long one commit may take before its callers fail with a retryable CommitFailed. */
  readonly commitTimeoutMs: number

  /** Chip Ingress endpoint (http:// for h2c, https:// for TLS). */
  readonly ingestUrl: string
  /** Headers sent with every request (e.g. authorization); values are secrets. */
  readonly ingestHeaders: Readonly<Record<string, Redacted.Redacted<string>>>
  /** gzip request bodies. */
  readonly gzip: boolean
  /** Deadline of one PublishBatch request. */
  readonly requestTimeoutMs: number
  /** Largest encoded PublishBatch request; batches are split below it. */
  readonly maxRequestBytes: number
  /** Most events in one request. */
  readonly publishBatchSize: number
  /** How long the publisher waits to fill a request once the first event is there. */
  readonly publishLingerMs: number
  /** Committed events waiting for delivery; when full they are left to the retransmitter. */
  readonly publishQueueCapacity: number
  /** Requests in flight at once. */
  readonly publishConcurrency: number
  /** First retry delay; doubles per retry, with ±20 % jitter, floored by server push-back. */
  readonly retryBaseDelayMs: number
  /** Cap of one retry delay (server push-back above it is still honoured, up to the budget). */
  readonly retryMaxDelayMs: number
  /** Time the publisher keeps retrying one batch; then the rows are left to the retransmitter. */
  readonly retryBudgetMs: number
  /** Most row ids in one delete statement. */
  readonly deleteBatchSize: number
  /** How long acks wait to be coalesced into one delete. */
  readonly deleteLingerMs: number
  /** On shutdown, how long to keep delivering before stopping (rows left stay in the table). */
  readonly shutdownTimeoutMs: number

  /** Run the retransmit and expiry loops (false for a plugin sharing its host's database). */
  readonly retransmit: boolean
  /** First lease of a new row: the retransmitter leaves it to the fast path until then. */
  readonly firstLeaseMs: number
  /** Lease of a claimed row: leaseBase × 2^attempts, capped at leaseMax. */
  readonly leaseBaseMs: number
  /** Cap of a claimed row's lease. */
  readonly leaseMaxMs: number
  /** Rows claimed at once. */
  readonly claimBatchSize: number
  /** How often an idle retransmitter looks for due rows. */
  readonly retransmitIntervalMs: number
  /** Rows older than this are expired. */
  readonly ttlMs: number
  /** Move expired rows to the dead-letter table instead of deleting them. */
  readonly deadLetterExpired: boolean
  /** How often the expiry loop runs. */
  readonly expiryIntervalMs: number
  /** Most rows expired by one statement. */
  readonly expiryBatchSize: number
  /** How often backlog statistics are read for metrics and health. */
  readonly statsIntervalMs: number
}

/** Options as given in code: durations as Duration inputs ("5 seconds", millis as numbers). */
export type EmitterOptionsInput = {
  readonly [K in keyof EmitterOptions as K extends `${infer Base}Ms` ? Base : K]?:
    K extends `${string}Ms` ? Duration.Input
      : K extends "databaseUrl" ? string | Redacted.Redacted<string>
      : K extends "ingestHeaders" ? Readonly<Record<string, string | Redacted.Redacted<string>>>
      : EmitterOptions[K]
}

export const defaults: EmitterOptions = {
  name: "durable-emitter",
  databaseUrl: Option.none(),
  dataDir: ".data/durable-emitter",
  tablePrefix: "durable_emitter",
  maxConnections: 10,

  maxEventBytes: 1024 * 1024,
  writeBatchSize: 1000,
  writeLingerMs: 0,
  writeQueueCapacity: 20_000,
  writeConcurrency: 2,
  enqueueTimeoutMs: 5_000,
  commitTimeoutMs: 10_000,

  ingestUrl: "http://127.0.0.1:50051",
  ingestHeaders: {},
  gzip: false,
  requestTimeoutMs: 5_000,
  maxRequestBytes: 10 * 1024 * 1024 - 10 * 1024,
  publishBatchSize: 1000,
  publishLingerMs: 20,
  publishQueueCapacity: 20_000,
  publishConcurrency: 4,
  retryBaseDelayMs: 100,
  retryMaxDelayMs: 5_000,
  retryBudgetMs: 30_000,
  deleteBatchSize: 2_000,
  deleteLingerMs: 20,
  shutdownTimeoutMs: 30_000,

  retransmit: true,
  firstLeaseMs: 60_000,
  leaseBaseMs: 10_000,
  leaseMaxMs: 60_000,
  claimBatchSize: 1_000,
  retransmitIntervalMs: 1_000,
  ttlMs: 24 * 60 * 60_000,
  deadLetterExpired: true,
  expiryIntervalMs: 60_000,
  expiryBatchSize: 5_000,
  statsIntervalMs: 5_000
}

type Kind = "string" | "int" | "duration" | "boolean"

/** How each option is read from the environment: DURABLE_EMITTER_<SNAKE_CASE> (databaseUrl: DATABASE_URL). */
const envKinds: { readonly [K in keyof EmitterOptionsInput]-?: Kind | "secret" | "headers" } = {
  name: "string", databaseUrl: "secret", dataDir: "string", tablePrefix: "string", maxConnections: "int",
  maxEventBytes: "int", writeBatchSize: "int", writeLinger: "duration", writeQueueCapacity: "int",
  writeConcurrency: "int", enqueueTimeout: "duration", commitTimeout: "duration",
  ingestUrl: "string", ingestHeaders: "headers", gzip: "boolean", requestTimeout: "duration",
  maxRequestBytes: "int", publishBatchSize: "int", publishLinger: "duration", publishQueueCapacity: "int",
  publishConcurrency: "int", retryBaseDelay: "duration", retryMaxDelay: "duration", retryBudget: "duration",
  deleteBatchSize: "int", deleteLinger: "duration", shutdownTimeout: "duration",
  retransmit: "boolean", firstLease: "duration", leaseBase: "duration", leaseMax: "duration",
  claimBatchSize: "int", retransmitInterval: "duration", ttl: "duration", deadLetterExpired: "boolean",
  expiryInterval: "duration", expiryBatchSize: "int", statsInterval: "duration"
}

/** The environment variable of an option. */
export const envName = (option: keyof EmitterOptionsInput): string =>
  option === "databaseUrl" ? "DATABASE_URL" : `DURABLE_EMITTER_${option.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`

const readEnv = (option: keyof EmitterOptionsInput): Config.Config<Option.Option<unknown>> => {
  const name = envName(option)
  switch (envKinds[option]) {
    case "string": return Config.option(Config.String(name))
    case "int": return Config.option(Config.Int(name))
    case "duration": return Config.option(Config.Duration(name))
    case "boolean": return Config.option(Config.Boolean(name))
    case "secret": return Config.option(Config.Redacted(name))
    // "authorization=Bearer x,x-api-key=y"
    case "headers": return Config.option(Config.Redacted(name)).pipe(Config.map(Option.map(parseHeaders)))
  }
}

const parseHeaders = (value: Redacted.Redacted<string>): Record<string, Redacted.Redacted<string>> =>
  Object.fromEntries(Redacted.value(value).split(",").filter((p) => p.includes("=")).map((pair) => {
    const at = pair.indexOf("=")
    return [pair.slice(0, at).trim().toLowerCase(), Redacted.make(pair.slice(at + 1).trim())]
  }))

/** Options read from the environment; absent variables are left out (defaults apply later). */
export const optionsFromEnv: Config.Config<EmitterOptionsInput> = Config.all(
  Object.fromEntries(Object.keys(envKinds).map((k) => [k, readEnv(k as keyof EmitterOptionsInput)]))
).pipe(Config.map((values) => {
  const input: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(values as Record<string, Option.Option<unknown>>)) {
    if (Option.isSome(v)) input[k] = v.value
  }
  return input as EmitterOptionsInput
}))

const envPrefix = ["DURABLE", "EMITTER"]
const knownEnvNames: ReadonlySet<string> = new Set(Object.keys(envKinds).map((k) => envName(k as keyof EmitterOptionsInput)))

/** The DURABLE_EMITTER_* variables the provider holds (the env provider splits names at "_"). */
const prefixedEnvNames: Effect.Effect<ReadonlyArray<string>> = Effect.gen(function*() {
  const provider = yield* ConfigProvider.ConfigProvider
  const names: Array<string> = []
  const walk = (path: ReadonlyArray<string>): Effect.Effect<void> =>
    provider.load(path).pipe(
      Effect.orElseSucceed(() => undefined),
      Effect.flatMap((node) => {
        if (node === undefined) return Effect.void
        if (node._tag === "Value" || (node._tag === "Record" && node.value !== undefined)) names.push(path.join("_"))
        if (node._tag !== "Record" || path.length > 12) return Effect.void
        return Effect.forEach(node.keys, (key) => walk([...path, key]), { discard: true })
      })
    )
  yield* walk(envPrefix)
  return names.filter((name) => name.length > "DURABLE_EMITTER_".length)
})

/** Edit distance, for "did you mean". */
const distance = (a: string, b: string): number => {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]!
}

/**
 * Options read from the environment (`DATABASE_URL`, `DURABLE_EMITTER_*`). A DURABLE_EMITTER_*
 * variable that names no option fails with InvalidConfig, with the nearest option's variable
 * when there is one: a misspelt variable would otherwise be ignored in silence.
 */
export const fromEnv: Effect.Effect<EmitterOptionsInput, InvalidConfig | Config.ConfigError> = Effect.gen(function*() {
  for (const name of yield* prefixedEnvNames) {
    if (knownEnvNames.has(name)) continue
    const nearest = [...knownEnvNames].map((known) => ({ known, d: distance(name, known) })).sort((x, y) => x.d - y.d)[0]
    const hint = nearest !== undefined && nearest.d <= 3 ? `; did you mean ${nearest.known}?` : ""
    return yield* new InvalidConfig({ option: name, rule: `no such option (an unknown DURABLE_EMITTER_* variable)${hint}` })
  }
  return yield* optionsFromEnv
})

const fail = (option: string, rule: string) => Effect.fail(new InvalidConfig({ option, rule }))

/** Merges the input over the defaults and checks every rule; fails naming the option and the rule. */
export const resolve = Effect.fnUntraced(function*(input: EmitterOptionsInput = {}) {
  const out: Record<string, unknown> = { ...defaults }
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue
    const kind = envKinds[key as keyof EmitterOptionsInput]
    if (kind === undefined) return yield* fail(key, "unknown option")
    if (kind === "duration") {
      const d = Duration.fromInput(value as Duration.Input)
      if (Option.isNone(d)) return yield* fail(key, "must be a duration (e.g. \"5 seconds\" or a number of milliseconds)")
      out[`${key}Ms`] = Duration.toMillis(d.value)
    } else if (kind === "secret") {
      out[key] = Option.some(Redacted.isRedacted(value) ? value : Redacted.make(value as string))
    } else if (kind === "headers") {
      out[key] = Object.fromEntries(Object.entries(value as Record<string, string | Redacted.Redacted<string>>)
        .map(([h, v]) => [h.toLowerCase(), Redacted.isRedacted(v) ? v : Redacted.make(v)]))
    } else {
      out[key] = value
    }
  }
  const options = out as unknown as EmitterOptions
  yield* validate(options)
  return options
})

/** Options that must be positive integers (exported for the tests of every rule). */
export const positiveInts: ReadonlyArray<keyof EmitterOptions> = [
  "maxConnections", "maxEventBytes", "writeBatchSize", "writeQueueCapacity", "writeConcurrency",
  "maxRequestBytes", "publishBatchSize", "publishQueueCapacity", "publishConcurrency", "deleteBatchSize",
  "claimBatchSize", "expiryBatchSize"
]
export const positiveDurations: ReadonlyArray<keyof EmitterOptions> = [
  "enqueueTimeoutMs", "commitTimeoutMs", "requestTimeoutMs", "retryBaseDelayMs", "retryMaxDelayMs",
  "retryBudgetMs", "shutdownTimeoutMs", "firstLeaseMs", "leaseBaseMs", "leaseMaxMs", "retransmitIntervalMs",
  "ttlMs", "expiryIntervalMs", "statsIntervalMs"
]
export const nonNegativeDurations: ReadonlyArray<keyof EmitterOptions> = ["writeLingerMs", "publishLingerMs", "deleteLingerMs"]

/** The name users write: `requestTimeoutMs` is set as `requestTimeout`. */
export const optionName = (key: string) => key.endsWith("Ms") ? key.slice(0, -2) : key

const validate = Effect.fnUntraced(function*(o: EmitterOptions) {
  for (const key of positiveInts) {
    const v = o[key]
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) return yield* fail(key, "must be a positive integer")
  }
  for (const key of positiveDurations) {
    const v = o[key]
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) return yield* fail(optionName(key), "must be a positive, finite duration")
  }
  for (const key of nonNegativeDurations) {
    const v = o[key]
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) return yield* fail(optionName(key), "must be zero or a positive, finite duration")
  }
  for (const key of ["name", "dataDir", "ingestUrl"] as const) {
    if (typeof o[key] !== "string" || o[key].length === 0) return yield* fail(key, "must be a non-empty string")
  }
  for (const key of ["gzip", "retransmit", "deadLetterExpired"] as const) {
    if (typeof o[key] !== "boolean") return yield* fail(key, "must be true or false")
  }
  if (!/^[a-z_][a-z0-9_]{0,39}$/.test(o.tablePrefix)) {
    return yield* fail("tablePrefix", "must be a lower-case SQL identifier: [a-z_][a-z0-9_]*, at most 40 characters")
  }
  if (!/^https?:\/\/[^/]+/.test(o.ingestUrl)) return yield* fail("ingestUrl", "must be an http:// (h2c) or https:// URL")
  if (o.maxEventBytes > o.maxRequestBytes) return yield* fail("maxEventBytes", "must not exceed maxRequestBytes: such an event could never be sent")
  if (o.retryBaseDelayMs > o.retryMaxDelayMs) return yield* fail("retryBaseDelay", "must not exceed retryMaxDelay")
  if (o.leaseBaseMs > o.leaseMaxMs) return yield* fail("leaseBase", "must not exceed leaseMax")
  // A send starts only while its row's lease can cover the whole request (Publisher.leaseSlack).
  if (o.firstLeaseMs <= o.requestTimeoutMs * leaseSlack) {
    return yield* fail("firstLease", `must exceed ${leaseSlack} × requestTimeout, or the fast path could not send a new row within its lease`)
  }
  if (o.leaseBaseMs <= o.requestTimeoutMs * leaseSlack) {
    return yield* fail("leaseBase", `must exceed ${leaseSlack} × requestTimeout, or a claimed row could not be sent within its lease`)
  }
  if (o.ttlMs <= o.firstLeaseMs) return yield* fail("ttl", "must exceed firstLease, or rows expire before the retransmitter may send them")
})

/** The settings worth publishing in the config-info gauge and logs: no secrets. */
export const describe = (o: EmitterOptions): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(o)) {
    if (key === "databaseUrl") out.store = Option.isSome(o.databaseUrl) ? "postgres" : "pglite"
    else if (key === "ingestHeaders") out.ingestHeaders = Object.keys(o.ingestHeaders).join(",")
    else out[optionName(key)] = String(value)
  }
  return out
}
