# clusterinit as a FROM-scratch image holding only /clusterinit, for
#   COPY --from=<this image> /clusterinit /clusterinit
# The build itself is `make build` (the same command the tests check), so the
# image and the tested binary cannot differ.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN make build VERSION=$VERSION

FROM scratch
COPY --from=build /src/bin/clusterinit /clusterinit
ENTRYPOINT ["/clusterinit"]
