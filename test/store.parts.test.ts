/**
 * The PostgreSQL Store's pure parts, without a database: how a statement numbers its parameters
 * and finds its columns, the stats decisions (count or estimate, payload bytes), and which
 * database URLs can work.
 */
import { assert, describe, it } from "@effect/vitest"
import { databaseUrlRule } from "../src/store/databaseUrl.ts"
import { resultColumns, statement } from "../src/store/pgStatement.ts"
import { backlogCount, exactCountLimit, payloadBytesOf } from "../src/store/pgStats.ts"

describe("statement declarations", () => {
  it("numbers parameters in the order declared, binds them by name, and reads columns by name", () => {
    const s = statement({
      operation: "test",
      params: ["first", "second", "third"],
      columns: { id: "id", at: "(extract(epoch FROM t) * 1000)::int8" },
      text: (p, columns) => `SELECT ${columns} FROM x WHERE a = ${p.second} AND b = ${p.first} AND c = ${p.third}`,
      bind: (input: { readonly a: number; readonly b: string }) => ({ third: "c", first: input.b, second: input.a }),
      decode: (row, c) => ({ id: row[c.id], at: row[c.at] })
    })
    assert.strictEqual(s.text, "SELECT id, (extract(epoch FROM t) * 1000)::int8 AS at FROM x WHERE a = $2 AND b = $1 AND c = $3")
    assert.deepStrictEqual(s.bind({ a: 7, b: "bee" }), ["bee", 7, "c"])
    assert.deepStrictEqual(s.decode([1n, 99]), { id: 1n, at: 99 })
  })

  it("result columns for a text built per call", () => {
    const columns = resultColumns({ a: "a", b: "lower(b)" })
    assert.strictEqual(columns.list, "a, lower(b) AS b")
    assert.deepStrictEqual(columns.at, { a: 0, b: 1 })
  })
})

describe("stats decisions", () => {
  it("a table the planner thinks large takes its estimate; a small one is counted", () => {
    assert.deepStrictEqual(backlogCount({ estimate: 2e6, sampled: 0 }), { _tag: "Counted", value: 2_000_000, exact: false })
    assert.deepStrictEqual(backlogCount({ estimate: 10, sampled: 12 }), { _tag: "Counted", value: 12, exact: true })
    assert.deepStrictEqual(backlogCount({ estimate: -1, sampled: null }), { _tag: "Counted", value: 0, exact: true })
  })

  it("a sample that hit its limit on a table the planner thought small needs the density estimate", () => {
    assert.deepStrictEqual(backlogCount({ estimate: -1, sampled: exactCountLimit + 1 }), {
      _tag: "NeedsDensity",
      sampled: exactCountLimit + 1
    })
  })

  it("payload bytes: summed when counted, else scaled from the sample, the planner's width, the table size", () => {
    const seen = { sampled: 100, sampleBytes: 5_000, payloadWidth: 70, tableBytes: 1e6 }
    assert.strictEqual(payloadBytesOf({ value: 100, exact: true }, seen), 5_000)
    assert.strictEqual(payloadBytesOf({ value: 1_000, exact: false }, seen), 50_000)
    assert.strictEqual(payloadBytesOf({ value: 1_000, exact: false }, { ...seen, sampled: 0 }), 70_000)
    assert.strictEqual(payloadBytesOf({ value: 1_000, exact: false }, { ...seen, sampled: 0, payloadWidth: null }), 1e6)
  })
})

describe("database URLs", () => {
  it("accepts what sql-pg connects with", () => {
    for (
      const url of [
        "postgres://postgres@127.0.0.1:5432/test",
        "postgresql://user:p%40ss@db.example.com/app?sslmode=require&application_name=x",
        "postgres://u@[::1]:5432/db",
        "postgres:///db?host=/var/run/postgresql&user=u",
        "postgres://u@h/db?connect_timeout=10&port=6543",
        "POSTGRES://u@h/db"
      ]
    ) {
      assert.isUndefined(databaseUrlRule(url), url)
    }
  })

  it("refuses what can never connect, naming the part without quoting the URL", () => {
    const cases: ReadonlyArray<[string, RegExp]> = [
      ["not a url", /not a URL/],
      ["postgres://u:secret@h:99999/db", /port outside 1-65535/],
      ["mysql://u:secret@h/db", /postgres:\/\/ or postgresql:\/\//],
      ["postgres://u:secret@h/db?sslmode=maybe", /sslmode/],
      ["postgres://u:secret@h/db?port=abc", /port parameter/],
      ["postgres://u:secret@h/db?connect_timeout=soon", /connect_timeout/],
      ["postgres://u:%E0%A4%A@h/db", /percent-encoding in its password/],
      ["", /empty/]
    ]
    for (const [url, rule] of cases) {
      const broken = databaseUrlRule(url)
      assert.match(broken ?? "", rule, url)
      assert.notInclude(broken ?? "", "secret", url)
    }
  })
})
