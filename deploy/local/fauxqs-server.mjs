// Starts the fauxqs SQS emulator (local development and tests only) on 127.0.0.1.
// Usage: node deploy/local/fauxqs-server.mjs PORT
// Prints "listening <url>" on stdout once it accepts connections; exits on SIGTERM/SIGINT.
import { buildApp } from "fauxqs";

const port = Number.parseInt(process.argv[2] ?? "", 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node fauxqs-server.mjs PORT");
  process.exit(2);
}
const app = buildApp({ logger: false });
const stop = () => app.close().finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
try {
  const url = await app.listen({ port, host: "127.0.0.1" });
  console.log(`listening ${url}`);
} catch (err) {
  console.error(`fauxqs could not listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
}
