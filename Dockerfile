# clusterinit as a FROM-scratch image holding only /clusterinit, for
#   COPY --from=<this image> /clusterinit /clusterinit
# The build itself is `make build` (the same command the tests check), so the
# image and the tested binary cannot differ.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# No VCS stamping: a .git that git cannot read here (a worktree's .git file,
# say) would fail the build; the version below is stamped by make.
ENV GOFLAGS=-buildvcs=false
# The version is what `git describe` says of the context's .git, unless
# given: docker build --build-arg VERSION=v1.2.3 . (without either, "dev").
ARG VERSION
# The architecture asked for: BuildKit sets TARGETARCH from --platform
# (docker buildx build --platform linux/arm64 .); the classic builder takes
# --build-arg TARGETARCH=arm64. Unset, the build machine's own. Either way
# the binary is static, and the image only serves COPY --from.
ARG TARGETARCH
RUN make build GOARCH="${TARGETARCH:-$(go env GOHOSTARCH)}" BIN=bin/clusterinit ${VERSION:+"VERSION=$VERSION"}

FROM scratch
COPY --from=build /src/bin/clusterinit /clusterinit
ENTRYPOINT ["/clusterinit"]
