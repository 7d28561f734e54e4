import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';

// Headless Chromium for the browser suites and the status page screenshot: the Debian `chromium`
// package (`.ci/run` installs it), driven by playwright-core, which ships no browser of its own.

/** Where Chromium is: `CHROMIUM_PATH`, else the Debian package's `/usr/bin/chromium`. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/**
 * Chromium's flags: headless without a sandbox (tests may run as root in a container), and none
 * of its own traffic (component updates, sync, field trials): on a closed network those
 * connections are refused and can stall the browser's start.
 */
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Starts headless Chromium; throws naming {@link CHROMIUM_PATH} when it is not installed. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `no Chromium at ${CHROMIUM_PATH}: install it (apt-get install chromium) or set CHROMIUM_PATH`,
    );
  }
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: FLAGS });
}
