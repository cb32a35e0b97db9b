# Sluice sidecar image. One image serves both containers that `sluice inject` adds:
# sluice-init (runs scripts/iptables/sluice-iptables.sh as root with NET_ADMIN, NET_RAW)
# and sluice-proxy (runs `sluice start` as uid 1337).
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sluice
COPY package.json package-lock.json binding.gyp tsconfig.json ./
COPY native ./native
COPY src ./src
COPY bin ./bin
COPY scripts ./scripts
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables iproute2 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 1337 sluice && useradd -u 1337 -g 1337 -M -s /usr/sbin/nologin sluice
WORKDIR /opt/sluice
COPY --from=build /opt/sluice/node_modules ./node_modules
COPY --from=build /opt/sluice/build/Release/sluice_net.node ./build/Release/sluice_net.node
COPY --from=build /opt/sluice/dist/src ./dist/src
COPY --from=build /opt/sluice/bin ./bin
COPY --from=build /opt/sluice/scripts ./scripts
COPY package.json ./
ENV SLUICE_BIN=/opt/sluice/bin/sluice.js
USER 1337:1337
EXPOSE 15001 15006 15020
ENTRYPOINT ["node", "/opt/sluice/bin/sluice.js"]
CMD ["start"]
