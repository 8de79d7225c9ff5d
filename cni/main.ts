// The twill-cni executable: reads the network configuration from stdin and the
// CNI_* variables, runs the command, prints the result (or the spec's error
// JSON) on stdout and exits 0 (or 1). Without CNI_COMMAND it prints its name,
// version and the CNI versions it supports on stderr and exits 0. Bundled into a single executable by
// cni/build-sea.mjs; also runs as `node dist/cni/main.js`.
import { readFileSync, writeSync } from 'node:fs';
import { cniMain } from './plugin.js';
import { SUPPORTED_VERSIONS, VERSION } from './spec.js';

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EOF' || code === 'ENXIO' || code === 'EBADF') return '';
    throw e;
  }
}

async function main(): Promise<number> {
  process.env.PATH ||= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  if (!process.env.CNI_COMMAND) {
    // Run by a person, not a runtime: say what this is, as the reference plugins
    // (containernetworking/cni's skel) do, on stderr, and exit 0. Stdin is not read.
    writeSync(2, `CNI plugin twill-cni version ${VERSION}\nCNI protocol versions supported: ${SUPPORTED_VERSIONS.join(', ')}\n`);
    return 0;
  }
  const stdin = process.env.CNI_COMMAND === 'VERSION' ? '' : readStdin();
  const { out, exit } = await cniMain(process.env, stdin);
  if (out) writeSync(1, out + '\n');
  return exit;
}

// No top-level await: the single-executable build needs a CommonJS bundle.
main().then((code) => process.exit(code), (e: unknown) => {
  writeSync(1, JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: e instanceof Error ? e.message : String(e) }) + '\n');
  process.exit(1);
});
