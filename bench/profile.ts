/**
 * Summarizes a V8 CPU profile (`node --cpu-prof`): top functions by self time, and self time per
 * package or source folder.
 *
 *   node --cpu-prof --cpu-prof-dir=.prof bench/main.ts write
 *   node bench/profile.ts .prof/CPU.*.cpuprofile [--top 30] [--callers functionName] [--inclusive "name,file.ts:line,…"]
 *
 * `--inclusive` answers the total time (self and callees) under frames matching each pattern
 * (a function name, or a name with its file and line as printed). `--owners` charges all time
 * to the nearest enclosing function of src/ (library and runtime time included), per function.
 */
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: "string" },
    callers: { type: "string" },
    depth: { type: "string" },
    inclusive: { type: "string" },
    owners: { type: "boolean" }
  }
})
const top = Number(values.top ?? 30)
const depth = Number(values.depth ?? 5)

/** Where a function lives: an npm package, a folder of ours, or the runtime. */
const shortFile = (url: string) => url.replace(/^file:\/\//, "").replace(/^.*?\/(node_modules|src|bench|test)\//, "$1/")
const frameName = (frame: CallFrame) => `${frame.functionName || "(anonymous)"}  ${shortFile(frame.url)}:${frame.lineNumber + 1}`

const area = (url: string) => {
  if (url === "") return "(runtime)"
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg !== null) return pkg[1]!
  if (url.startsWith("node:")) return "node:" + url.slice(5).split("/")[0]
  const ours = /\/(src|bench|test)\/(.*)$/.exec(url)
  return ours === null ? url : `${ours[1]}/${ours[2]!.split("/").slice(0, -1).join("/") || "."}`
}

for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const total = (profile.endTime - profile.startTime) / 1000
  const byFunction = new Map<string, number>()
  const byArea = new Map<string, number>()
  for (const [id, us] of self) {
    const frame = byId.get(id)!.callFrame
    const key = frameName(frame)
    byFunction.set(key, (byFunction.get(key) ?? 0) + us / 1000)
    const a = area(frame.url)
    byArea.set(a, (byArea.get(a) ?? 0) + us / 1000)
  }
  const rows = (m: Map<string, number>, n: number) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${v.toFixed(0).padStart(8)} ms ${(100 * v / total).toFixed(1).padStart(5)} %  ${k}`)
  console.log(`${file}: ${total.toFixed(0)} ms profiled`)
  console.log("self time by area:")
  for (const line of rows(byArea, 20)) console.log("  " + line)
  console.log(`top ${top} functions by self time:`)
  for (const line of rows(byFunction, top)) console.log("  " + line)

  if (values.inclusive !== undefined) {
    const parent = new Map<number, number>()
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
    console.log("inclusive time:")
    for (const pattern of values.inclusive.split(",").map((p) => p.trim())) {
      let ms = 0
      for (const [id, us] of self) {
        let at: number | undefined = id
        while (at !== undefined) {
          const frame = byId.get(at)!.callFrame
          if (frame.functionName === pattern || frameName(frame).includes(pattern)) {
            ms += us / 1000
            break
          }
          at = parent.get(at)
        }
      }
      console.log(`  ${ms.toFixed(0).padStart(8)} ms ${(100 * ms / total).toFixed(1).padStart(5)} %  ${pattern}`)
    }
  }

  if (values.owners === true) {
    const parent = new Map<number, number>()
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
    const owners = new Map<string, number>()
    for (const [id, us] of self) {
      const own = byId.get(id)!.callFrame
      if (own.functionName === "(idle)" || own.functionName === "(garbage collector)" || own.functionName === "(program)") {
        owners.set(own.functionName, (owners.get(own.functionName) ?? 0) + us / 1000)
        continue
      }
      let at: number | undefined = id
      let owner = "(no src/ frame on the stack)"
      while (at !== undefined) {
        const frame = byId.get(at)!.callFrame
        if (/\/src\//.test(frame.url)) {
          owner = frameName(frame)
          break
        }
        at = parent.get(at)
      }
      owners.set(owner, (owners.get(owner) ?? 0) + us / 1000)
    }
    console.log("time by nearest src/ function on the stack:")
    for (const line of rows(owners, top)) console.log("  " + line)
  }

  if (values.callers !== undefined) {
    // Self time of the named function, by the chain of its callers (innermost first).
    const parent = new Map<number, number>()
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
    const chains = new Map<string, number>()
    for (const [id, us] of self) {
      if (byId.get(id)!.callFrame.functionName !== values.callers) continue
      const names: Array<string> = []
      let at = parent.get(id)
      while (at !== undefined && names.length < depth) {
        names.push(frameName(byId.get(at)!.callFrame))
        at = parent.get(at)
      }
      const key = names.join("\n        ← ")
      chains.set(key, (chains.get(key) ?? 0) + us / 1000)
    }
    console.log(`callers of ${values.callers}:`)
    for (const line of rows(chains, 12)) console.log("  " + line)
  }
}
