// Validate GLB files with the Khronos glTF-Validator: `node validate.mjs FILE...`.
// Prints one JSON report per line (the validator's report, with the file's path as "uri").
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

for (const path of process.argv.slice(2)) {
  const bytes = new Uint8Array(await readFile(path));
  const report = await validator.validateBytes(bytes, { uri: path, maxIssues: 100 });
  process.stdout.write(JSON.stringify(report) + "\n");
}
