package listeners

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The held socket must stay non-blocking (workers share that flag: a
// blocking one strands a worker that loses an accept race in accept(2)) and
// must not sit in Go's epoll set (clusterinit would wake on every connection).
func TestHeldSocketIsNonBlockingAndNotPolled(t *testing.T) {
	for _, reusePort := range []bool{false, true} {
		sock, err := Listen("127.0.0.1:0", reusePort)
		if err != nil {
			t.Fatal(err)
		}
		defer sock.Close()
		flags, err := unix.FcntlInt(uintptr(sock.Fd()), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.O_NONBLOCK == 0 {
			t.Errorf("reusePort=%v: held socket is blocking (flags %#o)", reusePort, flags)
		}
		fdflags, err := unix.FcntlInt(uintptr(sock.Fd()), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fdflags&unix.FD_CLOEXEC == 0 {
			t.Errorf("reusePort=%v: held socket is inherited by every exec", reusePort)
		}
		if polled := polledFds(t); polled[sock.Fd()] {
			t.Errorf("reusePort=%v: held socket fd %d is in an epoll set", reusePort, sock.Fd())
		}
	}
}

// polledFds lists the fds registered in any epoll instance of this process.
func polledFds(t *testing.T) map[int]bool {
	t.Helper()
	fds, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	tfd := regexp.MustCompile(`(?m)^tfd:\s+(\d+)`)
	polled := map[int]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + filepath.Base(fd))
		if err != nil {
			continue
		}
		for _, m := range tfd.FindAllStringSubmatch(string(info), -1) {
			n, _ := strconv.Atoi(m[1])
			polled[n] = true
		}
	}
	return polled
}
