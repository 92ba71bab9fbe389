# Build: bundle the agent with its dependencies into dist/ (esbuild), with the dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Scripts are skipped: the only one fetches the pinned `node` binary, and this image already is Node.js 24.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json build.ts ./
COPY src ./src
RUN npm run build

# Run: a minimal Node.js LTS image; iproute2 and nftables for `initialize`; a non-root user for `server`.
# The bundle carries every dependency: no node_modules in the image.
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/dist ./dist
ENV NODE_ENV=production
# Without a cap V8 grows the young generation to 128 MB under load; 128 MB of old space holds about
# 25,000 cached identities (bench/README.md). Raise it with --max-cache-size beyond 20,000.
ENV NODE_OPTIONS="--max-semi-space-size=4 --max-old-space-size=128"
# One glibc malloc arena for every thread: V8's worker threads otherwise each keep an arena of freed
# memory resident after a burst, about 13 MB at 10 identities and 24 MB at 10,000 (bench/README.md).
ENV MALLOC_ARENA_MAX=1
# V8's compiled code for the whole bundle (`compile-cache` loads every chunk, the agent's too, and
# runs none), made here once, with the runtime's own flags and user (Node keys the cache by both), so
# each start skips compiling it: faster to ready and less RSS (bench/README.md).
# Read-only at run time (the pod's root filesystem is); a cache miss only means compiling as usual.
ENV NODE_COMPILE_CACHE=/app/compile-cache
RUN install -d -o 65532 -g 65532 /app/compile-cache
USER 65532:65532
RUN node /app/dist/cli.js compile-cache
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["server", "--help"]
