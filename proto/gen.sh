#!/usr/bin/env bash
# Regenerates the TypeScript types of proto/mcp_cluster.proto into services/core/generated/:
# plain interfaces with no runtime import (see proto/gen-types.mjs for the mapping). The
# generated folder is never edited by hand; run `npm run gen` after changing the .proto file.
set -euo pipefail
cd "$(dirname "$0")/.."
out=services/core/generated
rm -rf "$out"
mkdir -p "$out"
node proto/gen-types.mjs proto/mcp_cluster.proto "$out/mcp_cluster.ts"
