# One image for both containers of a skiff pod: the init container runs `skiff init` as
# root with NET_ADMIN and NET_RAW, the sidecar runs `skiff run` as uid 1337 (the default).
#
#   make image                      # docker build --build-arg VERSION=... -t skiff:VERSION .

# --- build: a static binary, as `make build` makes it
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/skiff . \
    && /out/skiff version

# --- run: Debian's iptables package brings both backends skiff init chooses between
# (iptables-nft and iptables-legacy, with ip6tables and the -save commands).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/skiff /usr/local/bin/skiff
# The defaults, so the image runs without a mounted config; Kubernetes mounts its
# ConfigMap over /etc/skiff.
COPY config.yaml /etc/skiff/config.yaml
# Numeric, so Kubernetes can check runAsNonRoot without a passwd entry; it must match
# proxy.uid and proxy.gid. The init container overrides it with runAsUser: 0.
USER 1337:1337
EXPOSE 15000 15001 15006
ENTRYPOINT ["/usr/local/bin/skiff"]
CMD ["run", "--config", "/etc/skiff/config.yaml"]
