// Command timeline loads an HTTP server with keep-alive connections and
// prints where its latency tail is in time: p50, p99 and the slowest request
// per bucket, around a signal it sends to a pid (a reload: SIGHUP to
// clusterinit). The benchmark's wrk gives one p99 for a whole run; this shows
// which moments of a reload make it.
//
//	go run ./bench/timeline -url http://127.0.0.1:8080/ -pid PID -signal-after 5s -d 15s
//
// It is a plain Go client (one goroutine per connection, HTTP/1.1 written and
// parsed by hand, Connection: close honoured by reconnecting), heavier than
// wrk: compare its buckets with each other, not with wrk's figures.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sample is one answered request: when it ended, from the start, and how
// long it took.
type sample struct{ end, latency time.Duration }

func main() {
	target := flag.String("url", "http://127.0.0.1:3000/", "the URL to GET")
	conns := flag.Int("c", 50, "keep-alive connections")
	duration := flag.Duration("d", 15*time.Second, "how long to load")
	bucket := flag.Duration("b", 50*time.Millisecond, "bucket width")
	pid := flag.Int("pid", 0, "send -signal to this pid (0: none)")
	after := flag.Duration("signal-after", 5*time.Second, "when to send it, from the start")
	signal := flag.Int("signal", int(syscall.SIGHUP), "the signal number")
	around := flag.Duration("around", time.Second, "print buckets from this long before the signal to this long after (with -pid); all without")
	flag.Parse()

	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		fmt.Fprintf(os.Stderr, "timeline: -url %q: want http://host:port/path\n", *target)
		os.Exit(2)
	}
	path := u.RequestURI()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\n\r\n")

	start := time.Now()
	var signalled atomic.Int64 // when the signal went, from the start
	if *pid > 0 {
		time.AfterFunc(*after, func() {
			signalled.Store(int64(time.Since(start)))
			if err := syscall.Kill(*pid, syscall.Signal(*signal)); err != nil {
				fmt.Fprintf(os.Stderr, "timeline: signal %d to pid %d: %v\n", *signal, *pid, err)
			}
		})
	}
	var (
		mu      sync.Mutex
		all     []sample
		errs    int
		reconns int
		wg      sync.WaitGroup
	)
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine, e, r := load(u.Host, req, start, *duration)
			mu.Lock()
			all, errs, reconns = append(all, mine...), errs+e, reconns+r
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(all, func(i, j int) bool { return all[i].end < all[j].end })
	fmt.Printf("%d requests, %d errors, %d closed by the server\n", len(all), errs, reconns)

	signalledAt := time.Duration(signalled.Load())
	from, to := time.Duration(0), *duration
	if signalledAt > 0 {
		fmt.Printf("signal %d sent at %.3fs\n", *signal, signalledAt.Seconds())
		from, to = signalledAt-*around, signalledAt+*around
	}
	fmt.Printf("%8s %7s %9s %8s %8s\n", "from", "n", "req/s", "p50 ms", "p99 ms")
	for lo := 0; lo < len(all); {
		b := all[lo].end / *bucket
		hi := lo
		for hi < len(all) && all[hi].end / *bucket == b {
			hi++
		}
		if t := b * *bucket; t >= from && t < to {
			lat := latencies(all[lo:hi])
			fmt.Printf("%7.2fs %7d %9.0f %8.2f %8.2f  max %.2f\n", t.Seconds(), len(lat),
				float64(len(lat))/bucket.Seconds(), ms(pct(lat, 0.5)), ms(pct(lat, 0.99)), ms(lat[len(lat)-1]))
		}
		lo = hi
	}
	if signalledAt > 0 {
		before := window(all, time.Second, signalledAt)
		fmt.Printf("p99 from 1s to the signal: %.2f ms (%d requests)\n", ms(pct(before, 0.99)), len(before))
	}
}

// load runs one connection until the end, reconnecting after a response that
// says Connection: close or an error.
func load(host string, req []byte, start time.Time, duration time.Duration) (out []sample, errs, reconns int) {
	var c net.Conn
	var r *bufio.Reader
	for time.Since(start) < duration {
		if c == nil {
			var err error
			if c, err = net.Dial("tcp", host); err != nil {
				errs++
				time.Sleep(time.Millisecond)
				continue
			}
			r = bufio.NewReader(c)
		}
		t := time.Now()
		closing, err := roundTrip(c, r, req)
		if err != nil {
			errs++
			c.Close()
			c = nil
			continue
		}
		now := time.Now()
		out = append(out, sample{now.Sub(start), now.Sub(t)})
		if closing {
			reconns++
			c.Close()
			c = nil
		}
	}
	if c != nil {
		c.Close()
	}
	return out, errs, reconns
}

// roundTrip writes req and reads one response with a Content-Length body.
func roundTrip(c net.Conn, r *bufio.Reader, req []byte) (closing bool, err error) {
	if _, err := c.Write(req); err != nil {
		return false, err
	}
	length := -1
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(line) <= 2 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil {
				return false, fmt.Errorf("content-length %q: %w", v, err)
			}
		case bytes.EqualFold(k, []byte("Connection")) && bytes.EqualFold(v, []byte("close")):
			closing = true
		}
	}
	if length < 0 {
		return false, fmt.Errorf("a response without Content-Length")
	}
	_, err = r.Discard(length)
	return closing, err
}

func window(all []sample, from, to time.Duration) []time.Duration {
	var in []sample
	for _, s := range all {
		if s.end >= from && s.end < to {
			in = append(in, s)
		}
	}
	return latencies(in)
}

func latencies(s []sample) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, x := range s {
		out[i] = x.latency
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
