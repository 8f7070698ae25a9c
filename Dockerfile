# One image for every process of the application server walkthrough: the
# appserver (manager or worker) and the proxy. Configure them with the
# TROUPE_* environment variables that mirror their flags (appserver -h,
# proxy -h); the cluster key comes from a mounted file (TROUPE_KEY_FILE)
# or a secret in TROUPE_CLUSTER_KEY.
#
#   docker build -t troupe-appserver .
#   docker run --rm troupe-appserver appserver -h
#
# Ports (see the README's walkthrough): gossip 7946/tcp+udp, the session
# transport 7947/tcp, HTTP 8080 (or HTTPS 8443) on every node, the proxy's
# 80/443.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/appserver ./examples/appserver && \
    CGO_ENABLED=0 go build -trimpath -o /out/proxy ./examples/proxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/appserver /out/proxy /usr/local/bin/
# A container has one address: bind every interface and advertise the
# pod's or container's IP (set TROUPE_ADVERTISE, e.g. from the Kubernetes
# downward API's status.podIP).
ENV TROUPE_BIND=0.0.0.0:7946
EXPOSE 7946/tcp 7946/udp 7947/tcp 8080/tcp 8443/tcp
ENTRYPOINT []
CMD ["appserver", "-h"]
