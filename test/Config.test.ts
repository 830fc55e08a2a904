import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted } from "effect"
import * as Config from "../src/Config.ts"
import { InvalidConfig } from "../src/Errors.ts"

const rejects = (input: Config.EmitterOptionsInput, option: string, rule: RegExp) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(Config.resolve(input))
    assert.instanceOf(error, InvalidConfig)
    assert.strictEqual(error.option, option)
    assert.match(error.rule, rule)
    assert.include(error.message, option)
  })

describe("Config.resolve", () => {
  it.effect("applies the defaults and takes durations as Duration inputs", () =>
    Effect.gen(function*() {
      const options = yield* Config.resolve({ writeLinger: "2 millis", requestTimeout: 1500, ttl: "2 hours" })
      assert.strictEqual(options.writeLingerMs, 2)
      assert.strictEqual(options.requestTimeoutMs, 1500)
      assert.strictEqual(options.ttlMs, 2 * 3_600_000)
      assert.strictEqual(options.publishBatchSize, Config.defaults.publishBatchSize)
      assert.isTrue(Option.isNone(options.databaseUrl))
    }))

  it.effect("keeps secrets redacted", () =>
    Effect.gen(function*() {
      const options = yield* Config.resolve({ databaseUrl: "postgres://u:secret@h/db", ingestHeaders: { Authorization: "Bearer t0k3n" } })
      assert.strictEqual(Redacted.value(Option.getOrThrow(options.databaseUrl)), "postgres://u:secret@h/db")
      assert.strictEqual(Redacted.value(options.ingestHeaders.authorization!), "Bearer t0k3n")
      const described = JSON.stringify(Config.describe(options))
      assert.notInclude(described, "secret")
      assert.notInclude(described, "t0k3n")
      assert.strictEqual(Config.describe(options).store, "postgres")
    }))

  for (const key of Config.positiveInts) {
    it.effect(`rejects a zero, negative or fractional ${key}`, () =>
      Effect.gen(function*() {
        yield* rejects({ [key]: 0 }, key, /positive integer/)
        yield* rejects({ [key]: -3 }, key, /positive integer/)
        yield* rejects({ [key]: 1.5 }, key, /positive integer/)
      }))
  }

  for (const key of Config.positiveDurations.map(Config.optionName)) {
    it.effect(`rejects a zero or infinite ${key}`, () =>
      Effect.gen(function*() {
        yield* rejects({ [key]: 0 }, key, /positive, finite duration/)
        yield* rejects({ [key]: "Infinity" }, key, /positive, finite duration/)
      }))
  }

  for (const key of Config.nonNegativeDurations.map(Config.optionName)) {
    it.effect(`accepts a zero ${key} but not a negative one`, () =>
      Effect.gen(function*() {
        const options = yield* Config.resolve({ [key]: 0 })
        assert.strictEqual(options[`${key}Ms` as keyof typeof options], 0)
        yield* rejects({ [key]: -1 }, key, /zero or a positive/)
      }))
  }

  it.effect("rejects something that is not a duration", () => rejects({ ttl: "soon" as never }, "ttl", /must be a duration/))
  it.effect("rejects an event limit above the request limit", () =>
    rejects({ maxEventBytes: 2_000_000, maxRequestBytes: 1_000_000 }, "maxEventBytes", /maxRequestBytes/))
  it.effect("rejects a retry base above its cap", () =>
    rejects({ retryBaseDelay: "10 seconds", retryMaxDelay: "1 second" }, "retryBaseDelay", /retryMaxDelay/))
  it.effect("rejects a lease base above its cap", () => rejects({ leaseBase: "1 hour", leaseMax: "1 minute" }, "leaseBase", /leaseMax/))
  it.effect("rejects a first lease that the fast path could outlive", () =>
    rejects({ firstLease: "6 seconds", requestTimeout: "5 seconds" }, "firstLease", /requestTimeout/))
  it.effect("rejects a claim lease shorter than a request", () =>
    rejects({ leaseBase: "1200 millis", requestTimeout: "1 second" }, "leaseBase", /requestTimeout/))
  it.effect("rejects a TTL shorter than the first lease", () => rejects({ ttl: "30 seconds", firstLease: "1 minute" }, "ttl", /firstLease/))
  it.effect("rejects a table prefix that is not an identifier", () =>
    rejects({ tablePrefix: "events; drop table x" }, "tablePrefix", /identifier/))
  it.effect("rejects an ingest URL without http(s)", () => rejects({ ingestUrl: "localhost:50051" }, "ingestUrl", /http/))
  it.effect("rejects an empty name", () => rejects({ name: "" }, "name", /non-empty/))
  it.effect("rejects a non-boolean switch", () => rejects({ retransmit: "yes" as never }, "retransmit", /true or false/))
  it.effect("rejects an unknown option", () => rejects({ bogus: 1 } as never, "bogus", /unknown option/))
})

describe("Config.fromEnv", () => {
  const fromEnv = (env: Record<string, string>) =>
    Config.fromEnv.pipe(Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })))

  it.effect("reads DATABASE_URL and DURABLE_EMITTER_* variables", () =>
    Effect.gen(function*() {
      const input = yield* fromEnv({
        DATABASE_URL: "postgres://localhost/db",
        DURABLE_EMITTER_INGEST_URL: "https://ingest:443",
        DURABLE_EMITTER_PUBLISH_BATCH_SIZE: "250",
        DURABLE_EMITTER_WRITE_LINGER: "3 millis",
        DURABLE_EMITTER_RETRANSMIT: "false",
        DURABLE_EMITTER_INGEST_HEADERS: "Authorization=Bearer abc, x-tenant=t1"
      })
      const options = yield* Config.resolve(input)
      assert.strictEqual(Redacted.value(Option.getOrThrow(options.databaseUrl)), "postgres://localhost/db")
      assert.strictEqual(options.ingestUrl, "https://ingest:443")
      assert.strictEqual(options.publishBatchSize, 250)
      assert.strictEqual(options.writeLingerMs, 3)
      assert.isFalse(options.retransmit)
      assert.strictEqual(Redacted.value(options.ingestHeaders.authorization!), "Bearer abc")
      assert.strictEqual(Redacted.value(options.ingestHeaders["x-tenant"]!), "t1")
    }))

  it.effect("a DURABLE_EMITTER_* variable that names no option is refused, with the nearest one", () =>
    Effect.gen(function*() {
      const typo = yield* Effect.flip(fromEnv({ DURABLE_EMITTER_REQEUST_TIMEOUT: "5 seconds", HOME: "/root" }))
      assert.instanceOf(typo, InvalidConfig)
      assert.strictEqual((typo as InvalidConfig).option, "DURABLE_EMITTER_REQEUST_TIMEOUT")
      assert.include((typo as InvalidConfig).rule, "did you mean DURABLE_EMITTER_REQUEST_TIMEOUT?")
      const unrelated = yield* Effect.flip(fromEnv({ DURABLE_EMITTER_COLOUR: "blue" }))
      assert.notInclude((unrelated as InvalidConfig).rule, "did you mean")
      // every option's variable is known, including names that are prefixes of others
      yield* fromEnv({ DURABLE_EMITTER_RETRANSMIT: "true", DURABLE_EMITTER_RETRANSMIT_INTERVAL: "2 seconds", OTHER_THING: "x" })
    }))

  it.effect("names the variable of a malformed value", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv({ DURABLE_EMITTER_PUBLISH_BATCH_SIZE: "many" }))
      assert.include(String(error), "DURABLE_EMITTER_PUBLISH_BATCH_SIZE")
    }))

  it("maps every option to its variable", () => {
    assert.strictEqual(Config.envName("databaseUrl"), "DATABASE_URL")
    assert.strictEqual(Config.envName("maxEventBytes"), "DURABLE_EMITTER_MAX_EVENT_BYTES")
    assert.strictEqual(Config.envName("retryBudget"), "DURABLE_EMITTER_RETRY_BUDGET")
  })
})
