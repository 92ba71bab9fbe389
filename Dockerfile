# Build: compile TypeScript with the dev dependencies, then keep only what runs.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Scripts are skipped: the only one fetches the pinned `node` binary, and this image already is Node.js 24.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts

# Run: a minimal Node.js LTS image; iproute2 and nftables for `initialize`; a non-root user for `server`.
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
ENV NODE_ENV=production
# Without a cap V8 grows the young generation to 128 MB under load; 128 MB of old space holds about
# 25,000 cached identities (bench/README.md). Raise it with --max-cache-size beyond 20,000.
ENV NODE_OPTIONS="--max-semi-space-size=4 --max-old-space-size=128"
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["server", "--help"]
