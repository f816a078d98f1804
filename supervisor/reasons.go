package supervisor

// The label values of the fleet's counters, in one place for the supervisor
// that counts and for health/ that exposes them (SPEC's metrics list them).

// ExitReason is why a worker exited: clusterinit_worker_exits_total{reason}.
type ExitReason string

const (
	ExitCrash   ExitReason = "crash"   // not asked to stop
	ExitOOM     ExitReason = "oom"     // killed by the kernel's OOM killer
	ExitStopped ExitReason = "stopped" // exited after its stop signal
	ExitKilled  ExitReason = "killed"  // SIGKILLed at DRAIN_TIMEOUT
)

// ExitReasons lists every ExitReason, in the order they are exposed.
func ExitReasons() []ExitReason { return []ExitReason{ExitCrash, ExitOOM, ExitStopped, ExitKilled} }

// RecycleReason is why a worker was replaced on purpose:
// clusterinit_worker_recycles_total{reason}.
type RecycleReason string

const (
	RecycleRSS      RecycleReason = "rss"      // over MAX_RSS for MAX_RSS_FOR
	RecycleCPU      RecycleReason = "cpu"      // over MAX_CPU for MAX_CPU_FOR
	RecycleAge      RecycleReason = "age"      // older than MAX_AGE
	RecycleRequests RecycleReason = "requests" // answered MAX_REQUESTS requests
	RecycleHang     RecycleReason = "hang"     // no heartbeat for HANG_TIMEOUT
	RecycleReload   RecycleReason = "reload"   // a step of a rolling reload
	RecycleScale    RecycleReason = "scale"    // its slot was removed (SIGTTOU)
)

// RecycleReasons lists every RecycleReason, in the order they are exposed.
func RecycleReasons() []RecycleReason {
	return []RecycleReason{RecycleRSS, RecycleCPU, RecycleAge, RecycleRequests, RecycleHang, RecycleReload, RecycleScale}
}

// ReloadResult is how a rolling reload ended: clusterinit_reloads_total{result}.
type ReloadResult string

const (
	ReloadSuccess ReloadResult = "success" // every slot got a new worker
	ReloadFailure ReloadResult = "failure" // stopped at a new worker that did not get ready, or cut short
)

// ReloadResults lists every ReloadResult, in the order they are exposed.
func ReloadResults() []ReloadResult { return []ReloadResult{ReloadSuccess, ReloadFailure} }
