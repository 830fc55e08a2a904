/**
 * THE option table: every option of the emitter once, with its kind, its default, the layer that
 * uses it and its documentation. The types (`EmitterOptions`, `EmitterOptionsInput`), the
 * defaults, the environment reader (./env.ts), the validation and `describe` (./resolve.ts) and
 * the README's configuration table (checked by test/readme.test.ts) are all derived from it.
 */
import * as path from "node:path"
import { Result } from "effect"
import * as Kinds from "./kinds.ts"

/**
 * Which layer an option configures. `layerNoDeps` builds only the "emitter" part: the Store and
 * the Transport are the caller's, so their options are refused there.
 */
export type Part = "store" | "transport" | "emitter"

export interface OptionSpec<I, A, Millis extends boolean, P extends Part = Part> {
  readonly kind: Kinds.Kind<I, A, Millis>
  /** The default, as a user would write it (undefined: unset). */
  readonly default: I | undefined
  readonly part: P
  /** One sentence or two for the README (and editors' hover, through the table). */
  readonly doc: string
  /** The README's default column, when the plain value says too little. */
  readonly shownDefault?: string
}

const option = <I, A, Millis extends boolean, P extends Part>(
  kind: Kinds.Kind<I, A, Millis>,
  part: P,
  default_: I | undefined,
  doc: string,
  shownDefault?: string
): OptionSpec<I, A, Millis, P> => ({ kind, part, default: default_, doc, ...(shownDefault === undefined ? {} : { shownDefault }) })

const positive = Kinds.duration("positive")
const lingers = Kinds.duration("zero allowed")
const mib = (bytes: number) => `${bytes} (${(bytes / 1024 / 1024).toFixed(2)} MiB)`

/** Table names: spliced into SQL text, so nothing but a plain identifier may get through (see pgSchema). */
const tablePrefix = Kinds.text((v) =>
  /^[a-z_][a-z0-9_]{0,39}$/.test(v) ? undefined : "must be a lower-case SQL identifier: [a-z_][a-z0-9_]*, at most 40 characters"
)

export const table = {
  name: option(Kinds.text(), "emitter", "durable-emitter", "Value of the `emitter` CloudEvent attribute and of metric/log annotations."),
  databaseUrl: option(
    Kinds.databaseUrl, "store", undefined,
    "PostgreSQL URL; when absent the embedded PGlite store in `dataDir` is used. Set but empty is refused.",
    "unset: embedded store"
  ),
  dataDir: option(
    Kinds.directory, "store", path.join(".data", "durable-emitter"),
    "Data directory of the embedded store (only without `databaseUrl`); a relative path is resolved against the working directory once, at start, and logged.",
    ".data/durable-emitter"
  ),
  tablePrefix: option(tablePrefix, "store", "durable_emitter", "Prefix of the tables (`<prefix>_events`, `<prefix>_sequences`, `<prefix>_dead_letters`)."),
  maxConnections: option(Kinds.count, "store", 10, "PostgreSQL connection pool size."),
  connectTimeout: option(positive, "store", "10 seconds", "How long opening a PostgreSQL connection may take."),
  transactionPooling: option(
    Kinds.boolean, "store", false,
    "`databaseUrl` goes through a transaction-pooling proxy (PgBouncer with `pool_mode = transaction`): connections send no session settings (set `statement_timeout` and `jit` on the role instead) and use no named prepared statements; the client's query timeout still bounds every statement."
  ),

  maxEventBytes: option(Kinds.count, "emitter", 1024 * 1024, "Largest encoded CloudEvent accepted by `emit`.", mib(1024 * 1024)),
  writeBatchSize: option(Kinds.count, "emitter", 1000, "Most events in one commit (one insert statement)."),
  writeLinger: option(lingers, "emitter", 0, "How long the write path waits to fill a commit batch once the first event is there (0 = no wait)."),
  writeQueueCapacity: option(
    Kinds.count, "emitter", 20_000,
    "Emits waiting for a commit (an `emitAll` counts once); when full, `emit` waits up to `enqueueTimeout`."
  ),
  writeConcurrency: option(Kinds.count, "emitter", 2, "Commits in flight at once."),
  enqueueTimeout: option(positive, "emitter", "5 seconds", "How long `emit` waits for room in a full write queue before failing with EmitterOverloaded."),
  commitTimeout: option(positive, "emitter", "10 seconds", "The longest an emit waits for its commit, end to end: at most half of it in the write queue, the rest for the commit (the database bounds the statement to 0.4 of it, so it answers first); then the caller gets CommitFailed."),

  ingestUrl: option(Kinds.httpUrl, "transport", "http://127.0.0.1:50051", "Chip Ingress endpoint (http:// for h2c, https:// for TLS)."),
  ingestHeaders: option(
    Kinds.headers, "transport", {},
    "Headers sent with every request (e.g. authorization); values are secrets. In the environment: `name=value,name=value`.",
    "none"
  ),
  gzip: option(Kinds.boolean, "transport", false, "gzip request bodies."),
  requestTimeout: option(
    positive, "emitter", "5 seconds",
    "Deadline of one PublishBatch request (the gRPC transport's, and the bound the lease rules assume of any Transport)."
  ),
  maxRequestBytes: option(
    Kinds.count, "emitter", 10 * 1024 * 1024 - 10 * 1024,
    "Largest encoded PublishBatch request; batches are split below it.", mib(10 * 1024 * 1024 - 10 * 1024)
  ),
  publishBatchSize: option(Kinds.count, "emitter", 1000, "Most events in one request."),
  publishLinger: option(lingers, "emitter", "20 millis", "How long the publisher waits to fill a request once the first event is there."),
  publishQueueCapacity: option(Kinds.count, "emitter", 20_000, "Committed events waiting for delivery; when full they are left to the retransmitter."),
  publishConcurrency: option(Kinds.count, "emitter", 4, "Requests in flight at once."),
  retryBaseDelay: option(positive, "emitter", "100 millis", "First retry delay; doubles per retry, with ±20 % jitter, floored by server push-back."),
  retryMaxDelay: option(positive, "emitter", "5 seconds", "Cap of one retry delay (server push-back above it is still honoured, up to the budget)."),
  retryBudget: option(positive, "emitter", "30 seconds", "Time the publisher keeps retrying one batch; then the rows are left to the retransmitter."),
  deleteBatchSize: option(Kinds.count, "emitter", 2_000, "Most row ids in one delete statement."),
  deleteLinger: option(lingers, "emitter", "20 millis", "How long acks wait to be coalesced into one delete."),
  shutdownTimeout: option(positive, "emitter", "30 seconds", "On shutdown, how long to keep delivering before stopping (rows left stay in the table)."),

  retransmit: option(Kinds.boolean, "emitter", true, "Run the retransmit and expiry loops (false for a plugin sharing its host's database)."),
  firstLease: option(positive, "emitter", "1 minute", "First lease of a new row: the retransmitter leaves it to the fast path until then."),
  leaseBase: option(positive, "emitter", "10 seconds", "Lease of a claimed row: leaseBase × 2^attempts, capped at leaseMax."),
  leaseMax: option(positive, "emitter", "1 minute", "Cap of a claimed row's lease."),
  claimBatchSize: option(Kinds.count, "emitter", 1_000, "Rows claimed at once."),
  retransmitInterval: option(positive, "emitter", "1 second", "How often an idle retransmitter looks for due rows."),
  ttl: option(positive, "emitter", "24 hours", "Rows older than this are expired."),
  deadLetterExpired: option(Kinds.boolean, "emitter", true, "Move expired rows to the dead-letter table instead of deleting them."),
  expiryInterval: option(positive, "emitter", "1 minute", "How often the expiry loop runs."),
  expiryBatchSize: option(Kinds.count, "emitter", 5_000, "Most rows expired by one statement."),
  statsInterval: option(positive, "emitter", "5 seconds", "How often backlog statistics are read for metrics and health."),
  maxTableBytes: option(
    Kinds.count, "emitter", 512 * 1024 * 1024,
    "Health turns degraded when the events table (heap, indexes, TOAST, every partition) is larger than this, unhealthy past twice it.",
    mib(512 * 1024 * 1024)
  )
} as const

export type Table = typeof table
/** An option's name as users write it: `requestTimeout`, `ingestUrl`. */
export type OptionName = keyof Table

type InputOf<S> = S extends OptionSpec<infer I, any, any> ? I : never
type ResolvedOf<S> = S extends OptionSpec<any, infer A, any> ? A : never
type ResolvedKey<K extends string, S> = S extends OptionSpec<any, any, true> ? `${K}Ms` : K

/** The resolved options: every field set, durations in milliseconds (`requestTimeoutMs`). */
export type EmitterOptions = {
  readonly [K in OptionName as ResolvedKey<K, Table[K]>]: ResolvedOf<Table[K]>
}

/** Options as given in code: durations as Duration inputs ("5 seconds", millis as numbers). */
export type EmitterOptionsInput = {
  readonly [K in OptionName]?: InputOf<Table[K]>
}

/** The options of one part of the emitter. */
export type OptionsOf<P extends Part> = { [K in OptionName]: Table[K]["part"] extends P ? K : never }[OptionName]

/** What `layerNoDeps` takes: the options of the services, not those of the Store or the Transport. */
export type ServicesOptionsInput = Pick<EmitterOptionsInput, OptionsOf<"emitter">>

export const optionNames: ReadonlyArray<OptionName> = Object.keys(table) as Array<OptionName>

const isOptionName = (key: string): key is OptionName => Object.hasOwn(table, key)

/** The spec of a name users wrote, or undefined. */
export const specOf = (key: string): OptionSpec<unknown, unknown, boolean> | undefined =>
  isOptionName(key) ? table[key] as OptionSpec<unknown, unknown, boolean> : undefined

/** The key of an option in `EmitterOptions`: `requestTimeout` → `requestTimeoutMs`. */
export const resolvedKey = (name: OptionName): keyof EmitterOptions =>
  (table[name].kind.millis ? `${name}Ms` : name) as keyof EmitterOptions

/** The name users write: `requestTimeoutMs` is set as `requestTimeout`. */
export const optionName = (key: string) => key.endsWith("Ms") ? key.slice(0, -2) : key

/** The environment variable of an option: DURABLE_EMITTER_<SNAKE_CASE> (databaseUrl: DATABASE_URL). */
export const envName = (option: OptionName): string =>
  option === "databaseUrl" ? "DATABASE_URL" : `DURABLE_EMITTER_${option.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`

/**
 * Decodes every option of `names`: the input's value, or the default. The one place where the
 * per-key types of the table meet a loop over its keys, hence the one assertion.
 */
export const decodeAll = (
  input: Readonly<Record<string, unknown>>,
  names: ReadonlyArray<OptionName>
): Result.Result<EmitterOptions, { readonly option: OptionName; readonly rule: string }> => {
  const out: Record<string, unknown> = {}
  for (const name of names) {
    const spec = table[name] as OptionSpec<unknown, unknown, boolean>
    const given = input[name]
    const decoded = spec.kind.decode(given === undefined ? spec.default : given)
    if (Result.isFailure(decoded)) return Result.fail({ option: name, rule: decoded.failure })
    out[resolvedKey(name)] = decoded.success
  }
  return Result.succeed(out as EmitterOptions)
}

const resolvedDefaults = decodeAll({}, optionNames)
if (Result.isFailure(resolvedDefaults)) throw new Error(`bad default of ${resolvedDefaults.failure.option}: ${resolvedDefaults.failure.rule}`)

/** Every option at its default (`dataDir` made absolute against the working directory at load). */
export const defaults: EmitterOptions = resolvedDefaults.success

/** Names of the options of a kind (exported for the tests of every rule). */
const namesOfKind = (kind: Kinds.Kind<any, any, any>) => optionNames.filter((name) => table[name].kind === kind)

/** Resolved keys of the options that must be positive integers. */
export const positiveInts: ReadonlyArray<keyof EmitterOptions> = namesOfKind(Kinds.count).map(resolvedKey)
export const positiveDurations: ReadonlyArray<keyof EmitterOptions> = namesOfKind(positive).map(resolvedKey)
export const nonNegativeDurations: ReadonlyArray<keyof EmitterOptions> = namesOfKind(lingers).map(resolvedKey)

/** The README's configuration table rows, generated from the table. */
export const markdownRows = (): ReadonlyArray<string> =>
  optionNames.map((name) => {
    const spec = table[name] as OptionSpec<unknown, unknown, boolean>
    const shown = spec.shownDefault ??
      (spec.kind.millis ? Kinds.formatMillis(Result.getOrThrow(spec.kind.decode(spec.default)) as number) : String(spec.default))
    return `| \`${name}\` | \`${envName(name)}\` | ${shown} | ${spec.doc} |`
  })
