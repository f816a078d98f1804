// Package supervisor runs the worker fleet: N copies of one command, each in
// a numbered slot, kept running, replaced one at a time, and stopped
// gracefully.
//
// Model:
//   - One goroutine, Run's loop, owns every piece of fleet state. It selects
//     over reaped exits, signals, IPC messages from workers, requests from the
//     HTTP side, /proc samples and a single timer. Nothing else reads or
//     writes a worker or a slot; the HTTP side gets an immutable Snapshot.
//   - Every handler takes the time as an argument, and the loop reaches the
//     operating system for its workers only through Procs (start one, signal
//     its process group; spawn.go forks real ones): fleet_test.go drives the
//     same handlers with a fake Procs and a fixed clock.
//   - Deadlines (a restart after backoff, READY_TIMEOUT, MIN_UPTIME,
//     MAX_AGE, the end of STOP_DELAY, DRAIN_TIMEOUT, the next sample) are
//     one list made from the fleet's state (deadlines.go), which both arms
//     the timer and acts when it fires. A deadline is listed only while
//     firing it would act, so a deadline already past (a MAX_AGE recycle
//     that had to wait) fires as soon as it can act.
//   - A worker is registered in the same goroutine that forked it, before the
//     loop reads the next exit, so an exit is never for an unknown worker;
//     exits of unknown pids are adopted orphans, reaped and counted.
//   - A worker is starting, ready or draining; an exited one is forgotten,
//     its exit counted by reason. A worker killed at READY_TIMEOUT never
//     becomes ready, even if its ready message was already on its way.
//   - A slot has at most one current worker (starting or ready) and at most
//     one pending: the new worker of the replacement under way in that slot.
//   - At most one replacement (reload step, recycle, scale-down) is under way
//     in the whole fleet, so capacity never drops by more than one worker. A
//     recycle due while another replacement runs waits for it to end; a
//     failed recycle is tried again after backoff.
//   - A rolling reload stops at the first new worker that does not get ready.
//     Every reload asked for ends in exactly one result: success, or failure
//     (a new worker failed, or a stop cut it short); one asked for during a
//     reload follows it, and fails with it.
//   - A slot's consecutive failed starts (an exit before ready or before
//     MIN_UPTIME) back its restarts off; a worker that runs MIN_UPTIME resets
//     them. MAX_FAILED_STARTS in a row, all slots together, stop the fleet
//     with exit status 1.
//   - Once stopping, nothing is started again, and Run returns only when no
//     worker is left.
package supervisor
