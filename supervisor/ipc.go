package supervisor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxIPCLine bounds one message from a worker. Larger lines are dropped whole
// (and logged): a worker must not make clusterinit buffer without limit.
const maxIPCLine = 64 << 10

// ipcWriteTimeout bounds a write to a worker that does not read its channel.
const ipcWriteTimeout = 5 * time.Second

type msgKind int

const (
	msgIgnored   msgKind = iota
	msgReady             // the app said process.send('ready') or {type:'ready'}
	msgListening         // the preload saw a handed socket listening
	msgPong              // the preload answered a heartbeat ping
	msgHandle            // the worker tried to send a handle
)

// message is one parsed line from a worker.
type message struct {
	pid  int
	kind msgKind
	seq  int64   // msgPong
	eld  float64 // msgPong: event-loop delay p99, seconds
}

// parseIPCLine interprets one JSON line from a worker. Lines that are valid
// JSON but mean nothing to clusterinit are msgIgnored; invalid ones are an
// error.
func parseIPCLine(line []byte) (message, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return message{}, errors.New("empty line")
	}
	if line[0] == '"' {
		var s string
		if err := json.Unmarshal(line, &s); err != nil {
			return message{}, err
		}
		if s == "ready" {
			return message{kind: msgReady}, nil
		}
		return message{}, nil
	}
	if line[0] != '{' {
		if !json.Valid(line) {
			return message{}, errors.New("invalid JSON")
		}
		return message{}, nil
	}
	var m struct {
		Type  any     `json:"type"`
		Cmd   any     `json:"cmd"`
		Event string  `json:"event"`
		Seq   int64   `json:"seq"`
		ELD   float64 `json:"eld"`
	}
	if err := json.Unmarshal(line, &m); err != nil {
		// Valid JSON of the wrong shape (say "seq":"x") is not worth an error.
		if json.Valid(line) {
			return message{}, nil
		}
		return message{}, err
	}
	switch {
	case m.Type == "ready":
		return message{kind: msgReady}, nil
	case m.Cmd == "NODE_HANDLE":
		return message{kind: msgHandle}, nil
	case m.Cmd == "NODE_CLUSTERINIT" && m.Event == "listening":
		return message{kind: msgListening}, nil
	case m.Cmd == "NODE_CLUSTERINIT" && m.Event == "pong":
		return message{kind: msgPong, seq: m.Seq, eld: m.ELD}, nil
	}
	return message{}, nil
}

// Lines the supervisor writes. Each is one complete JSON value and a newline:
// Node parses every line with JSON.parse and no try/catch, so a blank or
// partial line would crash the worker.
var (
	lineShutdown   = []byte("\"shutdown\"\n")
	lineDrain      = []byte("{\"cmd\":\"NODE_CLUSTERINIT_DRAIN\"}\n")
	lineHandleNack = []byte("{\"cmd\":\"NODE_HANDLE_NACK\"}\n")
)

func pingLine(seq int64) []byte {
	return []byte(fmt.Sprintf("{\"cmd\":\"NODE_CLUSTERINIT_PING\",\"seq\":%d}\n", seq))
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
			log.Warn("dropped oversized ipc message", "pid", pid, "limit_bytes", maxIPCLine)
			if err := skipLine(r); err != nil {
				return
			}
			continue
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("ipc channel closed", "pid", pid, "err", err)
			}
			return
		}
		m, perr := parseIPCLine(line)
		if perr != nil {
			log.Warn("dropped malformed ipc message", "pid", pid, "err", perr)
			continue
		}
		switch m.kind {
		case msgIgnored:
			continue
		case msgHandle:
			c.conn.SetWriteDeadline(time.Now().Add(ipcWriteTimeout))
			c.conn.Write(lineHandleNack)
			log.Warn("refused a handle sent over ipc (clusterinit does not take handles)", "pid", pid)
			continue
		}
		m.pid = pid
		select {
		case msgs <- m:
		case <-done:
			return
		}
	}
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
