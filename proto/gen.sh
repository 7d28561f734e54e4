#!/usr/bin/env bash
# Regenerates the TypeScript types for proto/*.proto into services/core/generated/.
# The generated folder is never edited by hand; run `npm run gen` after changing a .proto file.
set -euo pipefail
cd "$(dirname "$0")/.."
out=services/core/generated
rm -rf "$out"
npx proto-loader-gen-types --longs=Number --enums=String --defaults --oneofs --includeComments \
  --grpcLib=@grpc/grpc-js --outDir="$out" proto/mcp_cluster.proto
# ESM with NodeNext resolution needs explicit extensions on relative imports.
find "$out" -name '*.ts' -exec sed -i -E "s#(from '\.[^']*)';#\1.js';#" {} +
