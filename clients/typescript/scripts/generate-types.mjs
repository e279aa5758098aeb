// Writes src/contract.ts, the TypeScript types of the subject contract, from
// subjects/contract.schema.json (itself written from the msgspec types by `python -m subjects.schema`).
//
//   npm run generate           rewrite src/contract.ts
//   npm run check-generated    exit 1 when src/contract.ts is out of date
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { compile } from "json-schema-to-typescript";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const SCHEMA = here("../../../subjects/contract.schema.json");
const OUTPUT = here("../src/contract.ts");

const BANNER = `/* Types of Timestep's subject contract, written by \`npm run generate\` from
 * subjects/contract.schema.json. Do not edit: change the msgspec types in subjects/, run
 * \`python -m subjects.schema\`, then \`npm run generate\`. */`;

// A struct's type lists its fields only (extra fields are ignored on the wire, so they are no part
// of the type); a free-form object such as an input item stays open.
function closeStructs(node) {
  if (Array.isArray(node)) return node.map(closeStructs);
  if (node === null || typeof node !== "object") return node;
  const out = Object.fromEntries(Object.entries(node).map(([key, value]) => [key, closeStructs(value)]));
  if (out.properties && !("additionalProperties" in out)) out.additionalProperties = false;
  return out;
}

export async function render() {
  const contract = closeStructs(JSON.parse(await readFile(SCHEMA, "utf8")));
  const names = Object.keys(contract.$defs);
  // One root that names every definition, so each becomes an exported type.
  const root = {
    title: "Contract",
    description: "Every type of the contract by name: `Contract[\"RunRequest\"]`.",
    type: "object",
    properties: Object.fromEntries(names.map((name) => [name, { $ref: `#/$defs/${name}` }])),
    required: names,
    additionalProperties: false,
    $defs: contract.$defs,
  };
  return compile(root, "Contract", { bannerComment: BANNER, strictIndexSignatures: true });
}

const text = await render();
if (process.argv.includes("--check")) {
  const current = await readFile(OUTPUT, "utf8").catch(() => "");
  if (current !== text) {
    console.error(`${OUTPUT} is out of date with subjects/contract.schema.json: run \`npm run generate\``);
    process.exit(1);
  }
} else {
  await writeFile(OUTPUT, text);
  console.log(`wrote ${OUTPUT}`);
}
