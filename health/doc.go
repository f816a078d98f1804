// Package health is clusterinit's HTTP side: the health, status and metrics
// server at CLUSTERINIT_HEALTH_ADDR, and the two clients behind
// `clusterinit health` and `clusterinit reload`.
//
// # Model
//
// The server never touches the supervisor's state. The supervisor's loop
// publishes an immutable *supervisor.Snapshot after every event, and every
// GET handler renders whatever Snapshot() returns at that moment: no locks
// are shared with the loop and nothing is sent to it. A slow or stuck
// scraper therefore costs at most a goroutine and a connection here; it can
// never delay reaping, signal handling or a restart. The snapshot is treated
// as read-only: handlers copy before they sort and never write into its maps.
//
// The one request that reaches the loop is POST /reload, through
// Fleet.Reload. It is bounded on both sides: at most one call is in flight
// (a second request is refused while one waits), and the handler stops
// waiting after reloadWait even if the loop has not answered.
//
// # Liveness
//
// /healthz answers 200 while this process serves HTTP and the supervisor has
// published a snapshot. It does not prove that the loop is still turning: the
// loop publishes only after an event, so an idle fleet's snapshot is
// legitimately old and its age says nothing. Detecting a deadlocked loop
// would need the loop to publish on a periodic tick as well; until it does,
// that is out of scope here.
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
