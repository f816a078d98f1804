// Package e2e holds clusterinit's end-to-end tests: each starts the real
// binary (built once by TestMain) over real node or helper processes, on real
// sockets, and drives it with real HTTP and real signals.
//
// The tests run from the module root, so fixtures are named as the README
// names them (testdata/apps/http.js). The test binary doubles as a worker
// (helper_test.go) where Go is simpler than Node.
//
// Long tests (the chaos run, the soak, anything that takes more than a few
// seconds) and tests that need a prerequisite (wrk, unshare, docker, another
// Node line) call needLong or need: on a laptop `go test ./...` skips them;
// with E2E_ALL=1, as `make test` and CI set, they all run and a missing
// prerequisite fails the test instead of skipping it.
package e2e
