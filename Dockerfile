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
RUN if [ -n "$VERSION" ]; then make build VERSION="$VERSION"; else make build; fi

FROM scratch
COPY --from=build /src/bin/clusterinit /clusterinit
ENTRYPOINT ["/clusterinit"]
