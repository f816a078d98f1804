// Package health is clusterinit's HTTP side: the health, status and metrics
// server at CLUSTERINIT_HEALTH_ADDR, and the two clients behind
// `clusterinit health` and `clusterinit reload`.
//
// # Model
//
// The server never touches the supervisor's state. The supervisor's loop
// publishes an immutable *supervisor.Snapshot after every event, and every
// GET handler but /healthz and /metrics/app renders whatever Snapshot()
// returns at that moment: no locks are shared with the loop and nothing is
// sent to it. A slow or stuck scraper therefore costs at most a goroutine
// and a connection here; it can never delay reaping, signal handling or a
// restart. The snapshot is treated as read-only: handlers copy before they
// sort and never write into its maps.
//
// Three requests reach the loop, each bounded in time: POST /reload,
// through Fleet.Reload (at most one call in flight, a second request is
// refused while one waits, and the handler stops waiting after reloadWait
// even if the loop has not answered), /metrics/app's Fleet.AppMetrics, and
// /healthz's Fleet.Alive (below).
//
// # Liveness
//
// /healthz answers 200 once the supervisor has published a snapshot and
// while its loop answers Fleet.Alive within aliveWait: a request that the
// loop answers as soon as it takes it. A snapshot's age proves nothing (an
// idle fleet's is legitimately old), so a loop stuck in one event would
// otherwise keep /healthz at 200 and /readyz at its last answer. Like POST
// /reload, the request is bounded on both sides: the handler stops waiting
// after aliveWait, and a loop that never takes it costs only that wait.
//
// # Metrics without client_golang
//
// /metrics is written by a small Prometheus text-format (0.0.4) writer in
// metrics.go instead of github.com/prometheus/client_golang. client_golang
// adds about 4 MB to the stripped static binary (6.2 → 10.4 MB measured),
// which is a lot for a PID 1 that ships in every image, and its registry
// model would mean mirroring the snapshot into collectors anyway. The
// writer's output is checked against Prometheus's own parser (expfmt) in the
// tests, which is the only place that dependency is used. clusterinit's own
// process metrics come from /proc/self/stat via github.com/prometheus/procfs.
package health
