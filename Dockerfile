# The plugin's rootfs, for users who build with Docker instead of make.
# Its one layer equals what make plugin assembles offline: the same files,
# and a byte-identical binary for the same VERSION and COMMIT
# (scripts/dockerfile-check.sh compares them).
#   docker build --output type=local,dest=plugin/rootfs .     # BuildKit
#   cp config.json plugin/ && docker plugin create sockrelay plugin
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /rootfs/sockrelay ./cmd/sockrelay \
 && mkdir -p /rootfs/mnt/volumes /rootfs/host/run /rootfs/host/etc /rootfs/host/log /rootfs/run/docker/plugins \
             /rootfs/etc /rootfs/proc /rootfs/dev /rootfs/sys /rootfs/tmp

FROM scratch
COPY --from=build /rootfs/ /
ENTRYPOINT ["/sockrelay", "plugin"]
