// Starts real rcrt-server processes for the console tests: the SDK's test support (a fresh KEK,
// a free loopback port, a temporary working directory; service tokens and HS256 JWTs), shared
// rather than copied. Kept outside test/ because node's test runner treats every .mjs file under
// a test/ directory as a test file.

export {
  hs256Secret,
  mintHs256,
  serverBinary,
  serviceToken,
  startServer,
  writeSecretFile,
} from '../../sdk/typescript/test-support/rcrt-server.mjs';
