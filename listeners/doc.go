// Package listeners binds the TCP sockets that clusterinit hands to its
// workers.
//
// Invariant: a socket, once bound, stays open in clusterinit until it exits
// (or, in reuseport mode, until its slot is removed), so the port never stops
// listening while workers come and go: connections that arrive while no worker
// accepts wait in the kernel's accept queue for the next one.
//
// In shared mode there is one socket per address, and every worker accepts
// from it. In reuseport mode each worker slot has its own SO_REUSEPORT socket
// per address; the kernel spreads new connections across the slots' sockets,
// and successive workers of a slot inherit the same socket, so its queue is
// drained by the replacement rather than reset.
package listeners
