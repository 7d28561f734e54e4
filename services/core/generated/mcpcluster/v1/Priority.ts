// Original file: proto/mcp_cluster.proto

/**
 * Priority of a call inside its pool. Higher priorities are pulled first.
 */
export const Priority = {
  PRIORITY_NORMAL: 'PRIORITY_NORMAL',
  PRIORITY_HIGH: 'PRIORITY_HIGH',
  PRIORITY_LOW: 'PRIORITY_LOW',
} as const;

/**
 * Priority of a call inside its pool. Higher priorities are pulled first.
 */
export type Priority =
  | 'PRIORITY_NORMAL'
  | 0
  | 'PRIORITY_HIGH'
  | 1
  | 'PRIORITY_LOW'
  | 2

/**
 * Priority of a call inside its pool. Higher priorities are pulled first.
 */
export type Priority__Output = typeof Priority[keyof typeof Priority]
