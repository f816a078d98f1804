// Package signals does clusterinit's PID-1 duties: it takes in every signal
// the process can catch, and it owns reaping.
//
// Model and invariants:
//   - Exactly one goroutine calls wait4, always as wait4(-1, WNOHANG) in a loop
//     until it returns 0 or ECHILD, on every SIGCHLD and on a slow tick
//     (SIGCHLDs coalesce, and a status must never wait for a signal that was
//     merged into an earlier one). Nothing else in the process may wait for a
//     child: no exec.Cmd.Wait, no os.Process.Wait.
//   - Every reaped child is published as an Exit, in reaping order. The
//     consumer (the supervisor) decides whether the pid was one of its workers
//     or an adopted orphan; since the consumer registers a worker in the same
//     goroutine that forked it, before it reads the next Exit, no status can
//     arrive for a worker it does not know yet.
//   - SIGURG is Go's preemption signal and is dropped; SIGCHLD only wakes the
//     reaper; every other signal is passed on, unchanged, for the supervisor
//     to interpret or forward.
package signals
