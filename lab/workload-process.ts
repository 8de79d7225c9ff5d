// Starting a pod's workload from outside the pod: one way for the lab, the
// bench and the tests, so nothing probes a pod before its ports listen.
import { spawn } from 'node:child_process';
import { distFile } from '../lib/paths.js';
import { READY_LINE, workloadArgs, type WorkloadPorts } from './workload.js';

/** Runs the workload in `netns` (default ports unless given) and resolves with its pid once every port listens; stops it if it never does. */
export function launchWorkload(netns: string, ports?: WorkloadPorts, timeoutMs = 10_000): Promise<number> {
  const args = ports ? workloadArgs(ports) : [];
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, distFile('cli/twill.js'), '_workload', ...args], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => done(new Error(`workload in ${netns} did not start within ${timeoutMs / 1000} s`)), timeoutMs);
    const done = (err?: Error) => {
      clearTimeout(t);
      child.stdout?.removeAllListeners('data');
      child.stdout?.destroy();
      child.removeAllListeners('exit');
      child.unref();
      if (err) { child.kill('SIGKILL'); reject(err); } // a workload that never came up is stopped here, not left behind
      else resolve(child.pid!);
    };
    child.stdout?.on('data', (d) => { out += d; if (out.includes(READY_LINE)) done(); });
    child.once('exit', (code) => done(new Error(`workload in ${netns} exited with code ${code}`)));
  });
}
