# One place for every build and test command: the README, .ci/run and the
# Dockerfile all call these targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/clusterinit

.PHONY: build demo test fuzz bench

# A fully static, stripped binary.
build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

# The main job on the demo app: one plain Node http server per CPU on :3000.
demo: build
	CLUSTERINIT_HEALTH_ADDR=127.0.0.1:9558 ./$(BIN) -- node testdata/apps/http.js

# Everything CI runs.
test:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...
	go test -race -count=1 -timeout 30m ./...
	$(MAKE) fuzz

# A short run of every fuzz target; no input may panic.
FUZZTIME ?= 5s
fuzz:
	@for pkg in $$(go list ./...); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done
