// Package supervisor runs the worker fleet: N copies of one command, each in
// a numbered slot, kept running, replaced one at a time, and stopped
// gracefully.
//
// Model:
//   - One goroutine, Run's loop, owns every piece of fleet state. It selects
//     over reaped exits, signals, IPC messages from workers, requests from the
//     HTTP side and a single timer armed for the next deadline (a restart
//     after backoff, a ready timeout, a drain deadline). Nothing else reads or
//     writes a worker or a slot; the HTTP side gets an immutable Snapshot.
//   - A worker is registered in the same goroutine that forked it, before the
//     loop reads the next exit, so an exit is never for an unknown worker;
//     exits of unknown pids are adopted orphans, reaped and counted.
//   - A worker is starting, ready or draining. A slot has at most one current
//     worker (starting or ready) and at most one replacement being started.
//   - At most one replacement (reload, recycle, scale-down) is under way in
//     the whole fleet, so capacity never drops by more than one worker.
//   - Once stopping, nothing is started again, and Run returns only when no
//     worker is left.
package supervisor
