import { assert, describe, it } from "@effect/vitest"
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf"
import { durationFromMs } from "@bufbuild/protobuf/wkt"
import { Code, ConnectError } from "@connectrpc/connect"
import { Clock, Effect } from "effect"
import { TestClock } from "effect/testing"
import {
  CloudEventBatchSchema,
  PublishOptionsSchema,
  PublishResponseSchema
} from "../src/gen/chipingress/pb/chip_ingress_pb.js"
import { RetryInfoSchema } from "../src/gen/google/rpc/retry_info_pb.js"
import { CloudEventSchema } from "../src/gen/io/cloudevents/v1/cloudevent_pb.js"
import { IngestServer } from "../src/testing/IngestServer.ts"
import * as GrpcTransport from "../src/transport/GrpcTransport.ts"
import {
  grpcCodeName,
  hasEventId,
  kindOfCode,
  largestPushBack,
  parsePushbackMs,
  parseRetryAfterMs,
  parseRetryInfoMs,
  publishErrorCodeName,
  resultsOf,
  transportErrorOf
} from "../src/transport/outcome.ts"
import { batchRequestBytes, rawBatch, RawCloudEventBatchSchema } from "../src/transport/rawBatch.ts"

const response = (results: Array<{ error?: { errorCode: number; reason: string } }>) =>
  create(PublishResponseSchema, { results: results.map((r, i) => ({ eventId: `e${i}`, ...r })) })

const now = Date.parse("2026-03-01T12:00:00Z")

/** Encoded events with ids e0, e1, …: what `response` answers for. */
const sent = (n: number) =>
  Array.from({ length: n }, (_, i) => toBinary(CloudEventSchema, create(CloudEventSchema, { id: `e${i}`, source: "s", specVersion: "1.0", type: "t" })))

describe("outcome: per-event results", () => {
  it("an empty results list means every event was delivered", () => {
    const result = resultsOf(sent(3), response([]))
    assert.isTrue(result._tag === "Success")
    assert.deepStrictEqual(result._tag === "Success" && result.success.map((r) => r._tag), ["Delivered", "Delivered", "Delivered"])
  })

  it("one result per event: error set ⇒ Rejected with the code name and reason, unset ⇒ Delivered", () => {
    const result = resultsOf(
      sent(4),
      response([{}, { error: { errorCode: 1, reason: "bad" } }, { error: { errorCode: 4, reason: "domain" } }, {
        error: { errorCode: 0, reason: "" }
      }])
    )
    assert.deepStrictEqual(result._tag === "Success" && result.success, [
      { _tag: "Delivered" },
      { _tag: "Rejected", code: "VALIDATION_FAILED", reason: "bad" },
      { _tag: "Rejected", code: "DOMAIN_MISCONFIGURATION", reason: "domain" },
      { _tag: "Rejected", code: "UNKNOWN", reason: "" }
    ])
  })

  it("any other length is a retryable mismatch", () => {
    for (const n of [1, 4]) {
      const result = resultsOf(sent(3), response(Array.from({ length: n }, () => ({}))))
      assert.isTrue(result._tag === "Failure")
      if (result._tag === "Failure") {
        assert.strictEqual(result.failure.kind, "retryable")
        assert.strictEqual(result.failure.code, "mismatch")
      }
    }
  })

  it("a result naming another event of the batch is a retryable mismatch; empty or foreign ids go by position", () => {
    const swapped = create(PublishResponseSchema, { results: [{ eventId: "e1" }, { eventId: "e0", error: { errorCode: 1, reason: "bad" } }] })
    const result = resultsOf(sent(2), swapped)
    assert.isTrue(result._tag === "Failure" && result.failure.code === "mismatch" && result.failure.kind === "retryable")
    const anonymous = create(PublishResponseSchema, { results: [{ eventId: "" }, { eventId: "e1" }] })
    assert.isTrue(resultsOf(sent(2), anonymous)._tag === "Success")
    // a server that names results its own way: the position decides
    const foreign = create(PublishResponseSchema, { results: [{ eventId: "srv-1" }, { eventId: "srv-2", error: { errorCode: 1, reason: "bad" } }] })
    const byPosition = resultsOf(sent(2), foreign)
    assert.deepStrictEqual(byPosition._tag === "Success" && byPosition.success.map((r) => r._tag), ["Delivered", "Rejected"])
  })

  it("event ids are matched byte for byte, and by decoding when the id is not ASCII or not first", () => {
    const [event] = sent(1)
    assert.isTrue(hasEventId(event!, "e0"))
    assert.isFalse(hasEventId(event!, "e1"))
    assert.isFalse(hasEventId(event!, "e00"))
    const unicode = toBinary(CloudEventSchema, create(CloudEventSchema, { id: "é-✓", source: "s", specVersion: "1.0", type: "t" }))
    assert.isTrue(hasEventId(unicode, "é-✓"))
    assert.isFalse(hasEventId(unicode, "e-✓"))
    // field 1 after field 2: found by scanning
    const later = Uint8Array.of(0x12, 1, 0x73, 0x0a, 2, 0x69, 0x64)
    assert.isTrue(hasEventId(later, "id"))
    assert.isFalse(hasEventId(Uint8Array.of(0xff, 0xff), "id"))
  })

  it("publish error code names, including codes this build does not know", () => {
    assert.strictEqual(publishErrorCodeName(1), "VALIDATION_FAILED")
    assert.strictEqual(publishErrorCodeName(2), "SCHEMA_MISSING")
    assert.strictEqual(publishErrorCodeName(3), "ENCODE_ERROR")
    assert.strictEqual(publishErrorCodeName(42), "UNRECOGNIZED_42")
  })
})

describe("outcome: gRPC status classification", () => {
  it("retryable, permanent and configuration codes", () => {
    const kinds = Object.fromEntries(
      [
        Code.Unavailable,
        Code.ResourceExhausted,
        Code.DeadlineExceeded,
        Code.Aborted,
        Code.Internal,
        Code.Unknown,
        Code.Canceled,
        Code.DataLoss,
        Code.InvalidArgument,
        Code.FailedPrecondition,
        Code.OutOfRange,
        Code.NotFound,
        Code.AlreadyExists,
        Code.Unauthenticated,
        Code.PermissionDenied,
        Code.Unimplemented
      ].map((code) => [grpcCodeName(code), kindOfCode(code)])
    )
    assert.deepStrictEqual(kinds, {
      unavailable: "retryable",
      resource_exhausted: "retryable",
      deadline_exceeded: "retryable",
      aborted: "retryable",
      internal: "retryable",
      unknown: "retryable",
      canceled: "retryable",
      data_loss: "retryable",
      invalid_argument: "permanent",
      failed_precondition: "permanent",
      out_of_range: "permanent",
      not_found: "permanent",
      already_exists: "permanent",
      unauthenticated: "config",
      permission_denied: "config",
      unimplemented: "config"
    })
  })

  it("a server status keeps its code name and message", () => {
    const wire = new ConnectError("no credentials", Code.Unauthenticated)
    wire.isWireError = true
    const error = transportErrorOf(wire, now)
    assert.deepStrictEqual([error.kind, error.code, error.reason, error.retryAfterMs], ["config", "unauthenticated", "no credentials", undefined])
  })

  it("a Node.js network error anywhere in the cause chain is a retryable network error", () => {
    const cause = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })
    const error = transportErrorOf(new ConnectError("read ECONNRESET", Code.Aborted, undefined, undefined, cause), now)
    assert.deepStrictEqual([error.kind, error.code], ["retryable", "network"])
    assert.include(error.reason, "ECONNRESET")
  })

  it("a certificate failure is a configuration fault", () => {
    const cause = Object.assign(new Error("certificate has expired"), { code: "CERT_HAS_EXPIRED" })
    const error = transportErrorOf(new ConnectError("certificate has expired", Code.Internal, undefined, undefined, cause), now)
    assert.deepStrictEqual([error.kind, error.code, error.reason], ["config", "tls", "certificate has expired (CERT_HAS_EXPIRED)"])
  })

  it("connect's own deadline is a retryable timeout; a server's DEADLINE_EXCEEDED keeps its name", () => {
    const local = transportErrorOf(new ConnectError("the operation timed out", Code.DeadlineExceeded), now)
    assert.deepStrictEqual([local.kind, local.code], ["retryable", "timeout"])
    const wire = new ConnectError("too slow", Code.DeadlineExceeded)
    wire.isWireError = true
    assert.strictEqual(transportErrorOf(wire, now).code, "deadline_exceeded")
  })

  it("anything that is not a ConnectError is an unknown, retryable failure", () => {
    const error = transportErrorOf(new TypeError("boom"), now)
    assert.deepStrictEqual([error.kind, error.code, error.reason], ["retryable", "unknown", "boom"])
  })
})

describe("outcome: push-back", () => {
  it("grpc-retry-pushback-ms: milliseconds as a non-negative integer, \"never\" when negative", () => {
    assert.strictEqual(parsePushbackMs("1500"), 1500)
    assert.strictEqual(parsePushbackMs(" 20 "), 20)
    assert.strictEqual(parsePushbackMs("0"), 0)
    assert.strictEqual(parsePushbackMs("-5"), "never")
    for (const bad of ["1.5", "1e3", "abc", "", "-", "99999999999999999999", null, undefined]) {
      assert.isUndefined(parsePushbackMs(bad), String(bad))
    }
  })

  it("Retry-After in seconds", () => {
    assert.strictEqual(parseRetryAfterMs("3", now), 3000)
    assert.strictEqual(parseRetryAfterMs("0", now), 0)
    for (const bad of ["-1", "1.5", "soon", "", null]) assert.isUndefined(parseRetryAfterMs(bad, now), String(bad))
  })

  it("Retry-After as an HTTP-date, relative to the given now; past dates mean no wait", () => {
    assert.strictEqual(parseRetryAfterMs("Sun, 01 Mar 2026 12:00:10 GMT", now), 10_000)
    assert.strictEqual(parseRetryAfterMs("Sun, 01 Mar 2026 11:59:00 GMT", now), 0)
    assert.isUndefined(parseRetryAfterMs("2026-03-01T12:00:10Z", now))
  })

  it("RetryInfo delays; negative ones are ignored", () => {
    assert.strictEqual(parseRetryInfoMs({ seconds: 2n, nanos: 500_000_000 }), 2500)
    assert.strictEqual(parseRetryInfoMs({ seconds: 0n, nanos: 1_500_000 }), 2)
    assert.isUndefined(parseRetryInfoMs({ seconds: -1n, nanos: 0 }))
    assert.isUndefined(parseRetryInfoMs(undefined))
  })

  it("the largest valid push-back wins", () => {
    assert.strictEqual(largestPushBack([undefined, 10, 3000, 250]), 3000)
    assert.strictEqual(largestPushBack([0]), 0)
    assert.isUndefined(largestPushBack([undefined, undefined]))
  })

  it("reads every form from a failed call: trailer, Retry-After header and RetryInfo (as received on the wire)", () => {
    const error = new ConnectError("busy", Code.Unavailable, {
      "grpc-retry-pushback-ms": "1200",
      "retry-after": "Sun, 01 Mar 2026 12:00:02 GMT"
    })
    error.isWireError = true
    error.details = [{ type: "google.rpc.RetryInfo", value: toBinary(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: durationFromMs(1700) })) }]
    assert.strictEqual(transportErrorOf(error, now).retryAfterMs, 2000)
    assert.strictEqual(transportErrorOf(error, now + 1000).retryAfterMs, 1700)
    assert.strictEqual(transportErrorOf(error, now + 5000).retryAfterMs, 1700)
  })

  it("invalid push-back values are ignored, valid ones still count", () => {
    const error = new ConnectError("busy", Code.ResourceExhausted, { "grpc-retry-pushback-ms": "soon", "retry-after": "later" })
    assert.isUndefined(transportErrorOf(error, now).retryAfterMs)
    assert.isUndefined(transportErrorOf(error, now).doNotRetry)
    const mixed = new ConnectError("busy", Code.ResourceExhausted, { "grpc-retry-pushback-ms": "x", "retry-after": "4" })
    assert.strictEqual(transportErrorOf(mixed, now).retryAfterMs, 4000)
  })

  it("a negative grpc-retry-pushback-ms asks not to retry, whatever else the call carried", () => {
    const error = new ConnectError("go away", Code.Unavailable, { "grpc-retry-pushback-ms": "-1", "retry-after": "5" })
    const mapped = transportErrorOf(error, now)
    assert.deepStrictEqual([mapped.kind, mapped.doNotRetry, mapped.retryAfterMs], ["retryable", true, undefined])
    assert.include(mapped.message, "not to retry")
  })

  it("push-back is only reported on retryable failures", () => {
    const error = new ConnectError("denied", Code.PermissionDenied, { "retry-after": "5" })
    assert.isUndefined(transportErrorOf(error, now).retryAfterMs)
  })

  it.effect("GrpcTransport measures an HTTP-date Retry-After from the Effect Clock", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(now)
      const server = yield* IngestServer.make()
      const transport = yield* GrpcTransport.make({ url: server.url })
      server.faults.failNext(1, { status: "unavailable", retryAfter: "Sun, 01 Mar 2026 12:00:07 GMT" })
      const error = yield* Effect.flip(transport.publishBatch([new Uint8Array(0)]))
      assert.strictEqual(yield* Clock.currentTimeMillis, now)
      assert.strictEqual(error.retryAfterMs, 7000)
    }))
})

describe("rawBatch: the wire-identical CloudEventBatch view", () => {
  const event = (i: number, size: number) =>
    toBinary(
      CloudEventSchema,
      create(CloudEventSchema, {
        id: `id-${i}`,
        source: "s",
        specVersion: "1.0",
        type: "t",
        attributes: { seqnum: { attr: { case: "ceString", value: String(i) } } },
        data: { case: "binaryData", value: new Uint8Array(size).fill(i) }
      })
    )

  it("a server decoding the real CloudEventBatch sees the real CloudEvents", () => {
    const payloads = [event(1, 10), event(2, 200), event(3, 20_000), event(4, 0)]
    const wire = toBinary(RawCloudEventBatchSchema, rawBatch(payloads))
    const batch = fromBinary(CloudEventBatchSchema, wire)
    assert.strictEqual(batch.events.length, 4)
    batch.events.forEach((e, i) => assert.isTrue(equals(CloudEventSchema, e, fromBinary(CloudEventSchema, payloads[i]!))))
    assert.isUndefined(batch.options)
    assert.strictEqual(wire.byteLength, batchRequestBytes(payloads))
  })

  it("a real CloudEventBatch decodes into the same payloads, options included", () => {
    const events = [event(1, 5), event(2, 300)].map((b) => fromBinary(CloudEventSchema, b))
    const wire = toBinary(
      CloudEventBatchSchema,
      create(CloudEventBatchSchema, { events, options: { transactionEnabled: true } })
    )
    const raw = fromBinary(RawCloudEventBatchSchema, wire)
    assert.deepStrictEqual(raw.events, events.map((e) => toBinary(CloudEventSchema, e)))
    assert.isTrue(fromBinary(PublishOptionsSchema, raw.options).transactionEnabled)
  })

  it("batchRequestBytes counts the tag and length prefix of every event", () => {
    for (const size of [0, 126, 127, 16_383, 16_384, 2_097_152]) {
      const payload = new Uint8Array(size)
      assert.strictEqual(batchRequestBytes([payload]), toBinary(RawCloudEventBatchSchema, rawBatch([payload])).byteLength)
    }
  })
})
