// Parses mermaid diagrams with mermaid's own parser (mermaid.parse), as GitHub's renderer would
// before drawing them. Usage: node mermaid_parse.mjs FILE... (one diagram per file), or the
// diagram on stdin with no FILE. Prints one JSON line per diagram ({file, ok, type | error}) and
// exits 1 if any diagram fails to parse, 2 if mermaid itself cannot be loaded.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

// mermaid sanitises labels with DOMPurify, which needs a window; jsdom provides one.
const { window } = new JSDOM("<!doctype html><html><body></body></html>", { pretendToBeVisual: true });
globalThis.window = window;
globalThis.document = window.document;
for (const name of ["Element", "HTMLElement", "SVGElement", "Node", "DOMParser", "MutationObserver"]) {
  if (!(name in globalThis)) globalThis[name] = window[name];
}

let mermaid;
try {
  mermaid = (await import("mermaid")).default;
  mermaid.initialize({ startOnLoad: false });
} catch (err) {
  console.error(`cannot load mermaid: ${err?.stack ?? err}`);
  process.exit(2);
}

const files = process.argv.slice(2);
const inputs = files.length
  ? files.map((file) => ({ file, text: readFileSync(file, "utf8") }))
  : [{ file: "-", text: readFileSync(0, "utf8") }];

let failed = 0;
for (const { file, text } of inputs) {
  try {
    // suppressErrors: false makes an unparseable diagram throw instead of returning false.
    const result = await mermaid.parse(text, { suppressErrors: false });
    console.log(JSON.stringify({ file, ok: true, type: result.diagramType }));
  } catch (err) {
    failed += 1;
    const message = String(err?.message ?? err).split("\n").slice(0, 6).join("\n");
    console.log(JSON.stringify({ file, ok: false, error: message }));
  }
}
process.exit(failed ? 1 : 0);
