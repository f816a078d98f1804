package listeners

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is one bound, listening TCP socket.
type Socket struct {
	Addr  string // the address as configured, e.g. ":3000"
	Port  int    // the port actually bound
	Bound string // the local address actually bound, e.g. "[::]:3000"

	// fd is clusterinit's copy of the listening socket: a plain descriptor,
	// deliberately not an *os.File. An *os.File over a non-blocking socket
	// joins Go's epoll set, which would wake clusterinit on every incoming
	// connection, and its Fd method switches the shared file description to
	// blocking mode, which leaves a worker that loses an accept race blocked
	// in accept(2) forever.
	fd int
}

// Fd is the listening descriptor to hand to a worker. It stays non-blocking
// (a flag every worker shares) and is close-on-exec in clusterinit.
func (s *Socket) Fd() int { return s.fd }

// Close closes clusterinit's copy; workers keep theirs.
func (s *Socket) Close() error { return unix.Close(s.fd) }

// Name is the socket's LISTEN_FDNAMES entry. Names may not contain ':', so
// it is "port" followed by the port, which the Node preload matches against
// the port an app asks to listen on.
func (s *Socket) Name() string { return "port" + strconv.Itoa(s.Port) }

// Listen binds addr. With reusePort it sets SO_REUSEPORT so several sockets
// can share the address.
func Listen(addr string, reusePort bool) (*Socket, error) {
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	defer ln.Close()
	tl := ln.(*net.TCPListener)
	// Keep a duplicate outside the Go poller (see Socket.fd) and close the
	// listener itself, so nothing in clusterinit ever accepts or polls it.
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(orig uintptr) {
		fd, derr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if derr != nil {
		return nil, fmt.Errorf("listen on %s: duplicate socket: %w", addr, derr)
	}
	ta := tl.Addr().(*net.TCPAddr)
	return &Socket{Addr: addr, Port: ta.Port, Bound: ta.String(), fd: fd}, nil
}

// Set is every socket that clusterinit holds: shared sockets, handed to all
// workers, or one group of reuseport sockets per slot.
type Set struct {
	addrs     []string
	reusePort bool
	shared    []*Socket
	perSlot   [][]*Socket
}

// Open binds addrs for slots worker slots. An empty addrs means workers bind
// their own sockets (LISTEN=none).
func Open(addrs []string, reusePort bool, slots int) (*Set, error) {
	s := &Set{addrs: addrs, reusePort: reusePort}
	if !reusePort {
		for _, a := range addrs {
			sock, err := Listen(a, false)
			if err != nil {
				s.Close()
				return nil, err
			}
			s.shared = append(s.shared, sock)
		}
		return s, nil
	}
	for i := 0; i < slots; i++ {
		if _, err := s.ForSlot(i); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// ForSlot returns the sockets a worker of slot gets, binding them the first
// time a reuseport slot is used.
func (s *Set) ForSlot(slot int) ([]*Socket, error) {
	if !s.reusePort {
		return s.shared, nil
	}
	for len(s.perSlot) <= slot {
		s.perSlot = append(s.perSlot, nil)
	}
	if s.perSlot[slot] == nil {
		var group []*Socket
		for _, a := range s.addrs {
			// Bind the port the first slot got, so that ":0" (tests) gives
			// every slot the same port.
			if first := s.firstPort(a); first != 0 {
				h, _, _ := net.SplitHostPort(a)
				a = net.JoinHostPort(h, strconv.Itoa(first))
			}
			sock, err := Listen(a, true)
			if err != nil {
				closeAll(group)
				return nil, err
			}
			group = append(group, sock)
		}
		s.perSlot[slot] = group
	}
	return s.perSlot[slot], nil
}

func (s *Set) firstPort(addr string) int {
	for _, g := range s.perSlot {
		for _, sock := range g {
			if sock.Addr == addr {
				return sock.Port
			}
		}
	}
	return 0
}

// ReleaseSlot closes a removed slot's reuseport sockets. Connections still
// queued on them are reset by the kernel, so call it only after the slot's
// last worker has exited.
func (s *Set) ReleaseSlot(slot int) {
	if !s.reusePort || slot >= len(s.perSlot) {
		return
	}
	closeAll(s.perSlot[slot])
	s.perSlot[slot] = nil
}

// Sockets lists every socket held, for status output.
func (s *Set) Sockets() []*Socket {
	if !s.reusePort {
		return s.shared
	}
	var all []*Socket
	for _, g := range s.perSlot {
		all = append(all, g...)
	}
	return all
}

// Close closes every socket.
func (s *Set) Close() {
	closeAll(s.shared)
	for _, g := range s.perSlot {
		closeAll(g)
	}
}

func closeAll(socks []*Socket) {
	for _, sock := range socks {
		sock.Close()
	}
}
