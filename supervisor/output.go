package supervisor

import (
	"bufio"
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
)

// maxOutputLine bounds how much of one line is held before it is written
// out anyway (continued on the next prefixed line): a worker printing
// without newlines must not grow clusterinit's memory.
const maxOutputLine = 1 << 20

// LineWriter is one of clusterinit's output streams, shared by every
// worker's prefixer and by clusterinit's own logger: a whole line is one
// Write under its lock, so lines never interleave, however long they are
// (pipes make only writes of up to 4 KiB atomic by themselves).
type LineWriter struct {
	mu  sync.Mutex
	out io.Writer
}

// NewLineWriter serializes whole-line writes to out.
func NewLineWriter(out io.Writer) *LineWriter { return &LineWriter{out: out} }

// Write writes b, which should hold whole lines, in one piece.
func (lw *LineWriter) Write(b []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.out.Write(b)
}

// prefixOutput makes a pipe for one stream of a worker and copies what it
// writes to dst, line by line, each line prefixed with "[worker N] ". It
// returns the pipe's write end for the child; the copy ends when every holder
// of that end (the worker and any child it started) has closed it, and is
// counted in running until then.
func prefixOutput(slot int, dst *LineWriter, running *sync.WaitGroup) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	prefix := []byte("[worker " + strconv.Itoa(slot) + "] ")
	running.Add(1)
	go func() {
		defer running.Done()
		defer r.Close()
		br := bufio.NewReaderSize(r, 64<<10)
		line := make([]byte, 0, 4096)
		for {
			chunk, err := br.ReadSlice('\n')
			line = append(line, chunk...)
			full := err == nil
			if errors.Is(err, bufio.ErrBufferFull) && len(line) < maxOutputLine {
				continue
			}
			if len(line) > 0 {
				if !full {
					line = append(line, '\n')
				}
				dst.Write(append(append(make([]byte, 0, len(prefix)+len(line)), prefix...), line...))
				line = line[:0]
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
	}()
	return w, nil
}
