// Run Python steps on MicroPython's official WebAssembly port (32-bit) under Node.js.
//
//   node run.mjs --package DIR --heap BYTES [--files HOSTDIR] [--cwd /flash] < steps.json
//
// steps.json: {"steps": ["python source", ...]}. Each step is one top-level call
// (runPython). After each step the runner makes two more top-level calls: one that asks
// for a collection and one that reads gc.mem_alloc(), so "alloc" is the live heap after a
// collection. Output: one JSON line per step:
//   {"i", "ok", "type", "error", "out", "ms", "heap_total", "alloc"}
// heap_total: the GC heap's size after the step (the collection that ends a top-level
// call gives empty areas back, so growth inside the call is seen only from inside it);
// alloc: live bytes after one more top-level collection.
//
// --files copies a host directory into the port's in-memory filesystem (this build has
// MEMFS only; no host mount) at --cwd, which becomes the working directory and the
// first entry of sys.path (with its lib/), as a board's filesystem.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

function copyTree(FS, src, dest) {
  FS.mkdirTree(dest);
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, ent.name);
    const d = dest + "/" + ent.name;
    if (ent.isDirectory()) copyTree(FS, s, d);
    else if (ent.isFile()) FS.writeFile(d, fs.readFileSync(s));
  }
}

const pkgDir = arg("--package");
const heap = parseInt(arg("--heap", "65536"), 10);
const files = arg("--files");
const cwd = arg("--cwd", "/flash");
const { loadMicroPython } = await import(pathToFileURL(path.join(pkgDir, "micropython.mjs")));

let out = [];
const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => out.push(line),
  stderr: (line) => out.push(line),
});
if (files) {
  copyTree(mp.FS, files, cwd);
  mp.runPython(
    `import os, sys\nos.chdir(${JSON.stringify(cwd)})\n` +
      `sys.path[:0] = [${JSON.stringify(cwd)}, ${JSON.stringify(cwd + "/lib")}]\n` +
      "del os, sys\n",
  );
}

const { steps } = JSON.parse(fs.readFileSync(0, "utf8"));
for (let i = 0; i < steps.length; i++) {
  out = [];
  const t0 = Date.now();
  const rec = { i, ok: true, type: null, error: null };
  try {
    mp.runPython(steps[i]);
  } catch (e) {
    rec.ok = false;
    rec.type = e.type || e.name;
    rec.error = String(e.message || e);
  }
  rec.ms = Date.now() - t0;
  rec.out = out.join("\n");
  // The heap's size now: this build adds heap areas where a fixed heap would collect,
  // and gives empty ones back at the collection that ended the step's call.
  out = [];
  mp.runPython("import micropython\nmicropython.mem_info()");
  const m = /GC: total: (\d+)/.exec(out.join("\n"));
  rec.heap_total = m ? parseInt(m[1], 10) : null;
  // A collection runs only when control is back at the top level (this build defers
  // gc.collect() made inside a call): ask for one, return, then read the live heap.
  mp.runPython("import gc\ngc.collect()");
  mp.runPython("import gc\n__tk_alloc = gc.mem_alloc()");
  rec.alloc = mp.globals.get("__tk_alloc");
  mp.globals.delete("__tk_alloc");
  process.stdout.write(JSON.stringify(rec) + "\n");
}
