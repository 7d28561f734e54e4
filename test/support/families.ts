import { families } from '../../services/cli/families.js';

// The suites resolve configuration against the families the CLI registers, as the cluster does.

export { families };

/** The kernel's `resolveConfig` against the registered families. */
export const resolveConfig = families.resolveConfig;

/** The kernel's `loadConfig` against the registered families. */
export const loadConfig = families.loadConfig;
