package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterinit/clusterinit/preload"
)

// maxIPCLine is the read buffer of a worker's channel: every message but
// the app's metrics fits in it. maxLongIPCLine bounds one message, a
// metrics answer of a large app included (a few thousand series); larger
// lines are dropped whole (and logged): a worker must not make clusterinit
// buffer without limit.
const (
	maxIPCLine     = 64 << 10
	maxLongIPCLine = 16 << 20
)

// ipcWriteTimeout bounds a write to a worker that does not read its channel.
const ipcWriteTimeout = 5 * time.Second

// message is one parsed line from the worker with pid.
type message struct {
	pid int
	preload.Message
}

// channel is clusterinit's end of one worker's Node IPC socket.
type channel struct {
	conn *net.UnixConn
	out  chan []byte // written by the writer goroutine; full means drop
}

// newIPCPair makes the socketpair: the child's end (to pass as an inherited
// fd, without close-on-exec only in the child) and ours.
func newIPCPair() (child *os.File, parent *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("create ipc socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "ipc-child"), os.NewFile(uintptr(fds[1]), "ipc"), nil
}

// openChannel starts the reader and writer goroutines of a worker's channel.
// Messages go to msgs until the channel is closed; the reader answers
// NODE_HANDLE itself with a NACK so that a worker sending a handle never
// waits on clusterinit's loop (Node queues every later send until then).
func openChannel(parent *os.File, pid int, msgs chan<- message, done <-chan struct{}, log *slog.Logger) (*channel, error) {
	c, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		return nil, fmt.Errorf("open ipc channel of pid %d: %w", pid, err)
	}
	ch := &channel{conn: c.(*net.UnixConn), out: make(chan []byte, 16)}
	go ch.write()
	go ch.read(pid, msgs, done, log)
	return ch, nil
}

func (c *channel) write() {
	for b := range c.out {
		c.conn.SetWriteDeadline(time.Now().Add(ipcWriteTimeout))
		if _, err := c.conn.Write(b); err != nil {
			// The worker is gone or not reading: drain the queue quietly.
			for range c.out {
			}
			return
		}
	}
}

func (c *channel) read(pid int, msgs chan<- message, done <-chan struct{}, log *slog.Logger) {
	r := bufio.NewReaderSize(c.conn, maxIPCLine)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			line, err = readLong(r, line)
			if errors.Is(err, bufio.ErrBufferFull) {
				log.Warn("dropped oversized ipc message", "pid", pid, "limit_bytes", maxLongIPCLine)
				if err := skipLine(r); err != nil {
					return
				}
				continue
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("ipc channel closed", "pid", pid, "err", err)
			}
			return
		}
		pm, perr := preload.Parse(line)
		if perr != nil {
			log.Warn("dropped malformed ipc message", "pid", pid, "err", perr)
			continue
		}
		switch pm.Kind {
		case preload.KindIgnored:
			continue
		case preload.KindHandle:
			c.conn.SetWriteDeadline(time.Now().Add(ipcWriteTimeout))
			c.conn.Write(preload.HandleNackLine())
			log.Warn("refused a handle sent over ipc (clusterinit does not take handles)", "pid", pid)
			continue
		}
		select {
		case msgs <- message{pid: pid, Message: pm}:
		case <-done:
			return
		}
	}
}

// readLong reads the rest of a line longer than the reader's buffer, up to
// maxLongIPCLine; past that it returns bufio.ErrBufferFull.
func readLong(r *bufio.Reader, start []byte) ([]byte, error) {
	line := append([]byte(nil), start...)
	for len(line) <= maxLongIPCLine {
		more, err := r.ReadSlice('\n')
		line = append(line, more...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
	return nil, bufio.ErrBufferFull
}

// skipLine discards the rest of an oversized line.
func skipLine(r *bufio.Reader) error {
	for {
		_, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return err
	}
}

// send queues b for the worker; it never blocks the caller. A nil channel
// (the worker's could not be opened) drops everything.
func (c *channel) send(b []byte) {
	if c == nil {
		return
	}
	select {
	case c.out <- b:
	default:
	}
}

// close ends both goroutines.
func (c *channel) close() {
	if c == nil {
		return
	}
	close(c.out)
	c.conn.Close()
}
