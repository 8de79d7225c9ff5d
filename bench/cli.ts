// `twill bench <suite>`: the benchmark command line. Only `micro` exists so far.
export async function benchCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (!sub || sub === '-h' || sub === '--help') {
    process.stderr.write('usage:\n  twill bench micro [--json] [--quick]\n');
    return 2;
  }
  if (sub === 'micro') {
    const unknown = rest.filter((a) => a !== '--json' && a !== '--quick');
    if (unknown.length) {
      process.stderr.write(`twill bench micro: unknown option ${unknown[0]}\n`);
      return 2;
    }
    const { runMicro } = await import('./micro.js');
    await runMicro({ json: rest.includes('--json'), quick: rest.includes('--quick') });
    return 0;
  }
  process.stderr.write(`not yet: ${sub}\n`);
  return 2;
}
