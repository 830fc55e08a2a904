/**
 * The errors an application sees from the emitter. Each says what went wrong and whether a retry
 * can help, so callers never have to parse messages.
 *
 * One convention for every error here: `retryable` is a field (it travels with the error when it
 * is encoded) and means "the same call, made again later, may succeed". Errors whose answer never
 * varies fix it with a constructor default (`never` / `always`), so nobody passes it.
 */
import { Effect, Schema } from "effect"

/** `retryable` of an error that retrying never fixes. */
const never = Schema.Literal(false).pipe(Schema.withConstructorDefault(Effect.succeed(false as const)))
/** `retryable` of an error that may clear by itself. */
const always = Schema.Literal(true).pipe(Schema.withConstructorDefault(Effect.succeed(true as const)))

/** The input breaks a rule: `field` names the input field, `rule` the rule. Nothing was written. */
export class InvalidEvent extends Schema.TaggedError<InvalidEvent>()("InvalidEvent", {
  field: Schema.String,
  rule: Schema.String,
  retryable: never
}) {
  override get message() {
    return `invalid event: ${this.field}: ${this.rule}`
  }
}

/** The encoded CloudEvent is larger than `maxEventBytes`. Nothing was written. */
export class EventTooLarge extends Schema.TaggedError<EventTooLarge>()("EventTooLarge", {
  bytes: Schema.Number,
  maxBytes: Schema.Number,
  retryable: never
}) {
  override get message() {
    return `event too large: ${this.bytes} bytes encoded, the limit is ${this.maxBytes}`
  }
}

/** The write queue stayed full for longer than `enqueueTimeout`. Nothing was written; retry later. */
export class EmitterOverloaded extends Schema.TaggedError<EmitterOverloaded>()("EmitterOverloaded", {
  waitedMs: Schema.Number,
  retryable: always
}) {
  override get message() {
    return `emitter overloaded: the write queue stayed full for ${this.waitedMs} ms`
  }
}

/** The emitter is shutting down or closed: it accepts no more events. */
export class EmitterClosed extends Schema.TaggedError<EmitterClosed>()("EmitterClosed", {
  retryable: never
}) {
  override get message() {
    return "emitter closed: it accepts no more events"
  }
}

/**
 * The commit did not happen or its outcome is unknown. `retryable` is true when trying again can
 * help (connection loss, serialization failure, timeout, a backed-up write queue); false when the
 * database refused this emit's own data (its batch was split so that the other emits committed).
 * `committed` is "unknown" only when the database did not answer within `commitTimeout`, not even
 * to a lookup of the events: then a retry may write the event twice (with a new id); consumers
 * deduplicate by idempotency key.
 */
export class CommitFailed extends Schema.TaggedError<CommitFailed>()("CommitFailed", {
  reason: Schema.String,
  retryable: Schema.Boolean,
  committed: Schema.Literals(["no", "unknown"])
}) {
  override get message() {
    return `commit failed (${this.retryable ? "retryable" : "not retryable"}, committed: ${this.committed}): ${this.reason}`
  }
}

/**
 * `emit` / `emitAll` was called inside an open SQL transaction. It would commit on its own,
 * whatever the transaction then does; nothing was written. Inside a transaction of the emitter's
 * client (`DurableEmitter.layerFromClient`) use `Emitter.emitInTransaction`; a transaction of
 * another client cannot be joined.
 */
export class TransactionOpen extends Schema.TaggedError<TransactionOpen>()("TransactionOpen", {
  client: Schema.Literals(["emitter", "other"]),
  retryable: never
}) {
  override get message() {
    return this.client === "emitter"
      ? "emit inside a transaction would commit on its own: use Emitter.emitInTransaction to write the event in the transaction, or emit outside it"
      : "emit inside a transaction of another SqlClient would commit on its own: build the emitter on that client (DurableEmitter.layerFromClient) and use Emitter.emitInTransaction"
  }
}

/**
 * `emitInTransaction` was called with no transaction of the emitter's client open (or on an
 * emitter not built with `DurableEmitter.layerFromClient`). Nothing was written.
 */
export class NoTransaction extends Schema.TaggedError<NoTransaction>()("NoTransaction", {
  reason: Schema.String,
  retryable: never
}) {
  override get message() {
    return `no transaction to write in: ${this.reason}`
  }
}

/**
 * Writing the events in the caller's transaction failed; PostgreSQL has aborted that transaction,
 * so nothing of it (and none of the events) will commit. `retryable`: the whole transaction may
 * succeed when run again.
 */
export class TransactionWriteFailed extends Schema.TaggedError<TransactionWriteFailed>()("TransactionWriteFailed", {
  reason: Schema.String,
  retryable: Schema.Boolean
}) {
  override get message() {
    return `writing the events in your transaction failed (the transaction is aborted): ${this.reason}`
  }
}

/** Every error `Emitter.emit` can fail with. */
export type EmitError = InvalidEvent | EventTooLarge | EmitterOverloaded | EmitterClosed | CommitFailed | TransactionOpen

/** Every error `Emitter.emitInTransaction` can fail with. */
export type TransactionalEmitError = InvalidEvent | EventTooLarge | NoTransaction | TransactionWriteFailed

/**
 * What the database driver reported, kept as data rather than flattened into a message:
 * `src/store/driverFault.ts` reads it off the driver's error and classifies it.
 */
export const DriverFault = Schema.Struct({
  /** The driver's reason (sql's SqlError reason): "ConnectionError", "StatementTimeoutError", … */
  kind: Schema.String,
  /** The SQLSTATE the server answered with (e.g. "57P01"), when it answered with an error. */
  sqlState: Schema.optional(Schema.String),
  /** The socket's error code (e.g. "ECONNREFUSED"), when the connection itself failed. */
  errno: Schema.optional(Schema.String),
  /** "connect": the failure came while opening a connection, so nothing of the call was sent. */
  phase: Schema.Literals(["connect", "query"]),
  /** The driver's own words, e.g. "connect ECONNREFUSED 127.0.0.1:5432". */
  detail: Schema.String
})
export type DriverFault = typeof DriverFault.Type

/**
 * A Store operation failed. `retryable`: the same call may succeed later. `committed`: whether
 * the call's writes may have taken effect ("no": the database refused the statement or never got
 * it; "unknown", the default: the connection was lost while it ran, or nobody can tell). `driver`
 * is what the database driver reported, when the failure came from it.
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  reason: Schema.String,
  retryable: Schema.Boolean,
  committed: Schema.Literals(["no", "unknown"]).pipe(
    Schema.withConstructorDefault(Effect.succeed("unknown" as const))
  ),
  driver: Schema.optional(DriverFault)
}) {
  override get message() {
    return `store ${this.operation} failed${this.retryable ? " (retryable)" : ""}: ${this.reason}`
  }
}

/** An option breaks a rule. Raised when the layer is built, before anything runs. */
export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  option: Schema.String,
  rule: Schema.String,
  retryable: never
}) {
  override get message() {
    return `invalid configuration: ${this.option}: ${this.rule}`
  }
}

/**
 * The embedded store's data directory is open in another process, or in another layer of this
 * one (`holderPid` is then this process). One process at a time may open it; the layer fails at
 * build time and nothing was opened. Retryable: the holder may close it.
 */
export class StoreLocked extends Schema.TaggedError<StoreLocked>()("StoreLocked", {
  dataDir: Schema.String,
  lockFile: Schema.String,
  holderPid: Schema.Number,
  retryable: always
}) {
  override get message() {
    const own = this.holderPid === process.pid
    const holder = own ? `this process (pid ${this.holderPid})` : `process ${this.holderPid}`
    return `store locked: the data directory ${this.dataDir} is in use by ${holder} (lock file ${this.lockFile}); ` +
      "an embedded store can be open in one process at a time" +
      (own ? "" : ` (if process ${this.holderPid} is not a durable-emitter, its pid was reused: delete the lock file)`)
  }
}

/**
 * A feature needs an optional peer dependency that is not installed (the embedded store needs
 * `@electric-sql/pglite`, the CLI `@effect/platform-node`). Nothing was started; install the
 * package, or do without the feature (e.g. set `databaseUrl` to use PostgreSQL).
 */
export class PackageMissing extends Schema.TaggedError<PackageMissing>()("PackageMissing", {
  packageName: Schema.String,
  feature: Schema.String,
  retryable: never
}) {
  override get message() {
    return `${this.feature} needs the package ${this.packageName}, which is not installed: npm install ${this.packageName}`
  }
}
