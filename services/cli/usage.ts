/** `mcp-cluster --help`: every command and the options they share. */
export const USAGE = `mcp-cluster: serve GPU-backed MCP tools to AI agents at scale

Usage:
  mcp-cluster up [--config FILE] [--port N] [--autoscale] [--conformance]
                                                     everything in one process (memory queue, simulated
                                                     backends for pools without endpoints); --autoscale
                                                     sizes each pool's in-process workers by its load;
                                                     --conformance adds the MCP conformance suite's
                                                     fixture tools (pool conformance)
  mcp-cluster ingress [--config FILE] [--broker URL] [--port N] [--delivery-port N]
  mcp-cluster worker --pool NAME [--config FILE] [--broker URL] [--port N]
  mcp-cluster autoscaler [--config FILE] [--broker URL] [--port N]
                                                     sizes every pool from its queue (autoscaler.provider:
                                                     kubernetes, local worker processes or metrics only)
  mcp-cluster sim [--kind vllm|comfyui] [--port N] [--ttft-ms N] [--tokens-per-second N] ...
  mcp-cluster config check [--config FILE]
  mcp-cluster keys create --tenant NAME [--scopes a,b] [--expires 90d] [--name TEXT]
                                                     mints an API key; prints it once, with the entry
                                                     to add to the keys file (auth.apiKeys.file)
  mcp-cluster plan [--config FILE] (--metrics URL ... | --prometheus URL) [--window 10s] [--what-if X]
                   [--target-wait 1s] [--percentile 0.95] [--batch-deadline 1h] [--model mgc|mmc]
                   [--agents [POOL=]N ...] [--think-time D] [--json]
                                                     observe per-pool rates, then size each pool for a
                                                     queue-wait target (M/G/c, or M/M/c//N for agents)
                                                     with GPUs and cost, and each batch backlog's ETA
                                                     and replicas for a deadline
  mcp-cluster batch submit FILE [--pool NAME] [--wait] [--json]
  mcp-cluster batch status ID | list [--limit N] | cancel ID  [--json]
  mcp-cluster batch results ID -o FILE [--errors FILE]
                                                     batch embedding jobs (JSONL in, one row per id out)
                                                     through the cluster's /v1 API: --url URL
                                                     ($MCP_CLUSTER_URL, default http://127.0.0.1:3000),
                                                     --api-key KEY ($MCP_CLUSTER_API_KEY) or --token
                                                     TOKEN ($MCP_CLUSTER_TOKEN); submit --wait shows
                                                     progress and exits 0 only if the job completed

Options:
  --config FILE   YAML configuration (default: $MCP_CLUSTER_CONFIG, else built-in defaults)
  --broker URL    nats://host:port, redis://host:port or memory: (overrides broker.url)
  --port N        HTTP port: /mcp on the ingress, /healthz /readyz /metrics on a worker or the
                  autoscaler (which also serves /status)
  -h, --help      this text
`;

/** Prints the usage on stdout; the exit code of an asked-for `--help`. */
export function help(): number {
  process.stdout.write(USAGE);
  return 0;
}
