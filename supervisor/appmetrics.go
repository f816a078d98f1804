package supervisor

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/clusterinit/clusterinit/preload"
)

// A scrape of the app's own metrics (/metrics/app). The HTTP side asks the
// loop, the loop writes one metrics request to every ready worker and hands
// back a channel; each worker's answer goes through the loop (which owns the
// workers) into that channel, buffered for every worker asked, so the loop
// never waits on a slow scraper. The HTTP side waits for the answers it can
// use and gives up on the others itself; the loop forgets a scrape once every
// worker asked has answered, or scrapeForget after it began (a worker that
// exited or hung never answers).

const (
	// maxScrapes bounds scrapes under way at once: each one writes a line
	// to every worker.
	maxScrapes = 4
	// scrapeForget drops the loop's record of a scrape whose worker never
	// answered; the HTTP side gave up long before.
	scrapeForget = 10 * time.Second
)

// errTooManyScrapes refuses a scrape while maxScrapes are under way.
var errTooManyScrapes = errors.New("too many /metrics/app scrapes under way")

// Scrape is one request for the app's metrics: Answers receives the
// getMetricsAsJSON() list of each worker asked, at most Asked of them.
type Scrape struct {
	Asked   int
	Answers <-chan json.RawMessage

	seq     uint64
	at      time.Time
	waiting map[int]bool // pids asked that have not answered
	answers chan json.RawMessage
}

type scrapeRequest struct{ reply chan *Scrape }

// AppMetrics asks every ready worker for its app's prom-client metrics.
// The caller reads up to Asked answers from the Scrape, for as long as it
// cares to wait.
func (s *Supervisor) AppMetrics() (*Scrape, error) {
	req := scrapeRequest{reply: make(chan *Scrape, 1)}
	select {
	case s.scrapeReqs <- req:
	case <-s.done:
		return nil, errStopping
	}
	select {
	case sc := <-req.reply:
		if sc == nil {
			return nil, errTooManyScrapes
		}
		return sc, nil
	case <-s.done:
		return nil, errStopping
	}
}

// onScrape starts a scrape: one metrics request to every ready worker.
func (s *Supervisor) onScrape(req scrapeRequest, now time.Time) {
	for seq, sc := range s.scrapes {
		if now.Sub(sc.at) > scrapeForget {
			delete(s.scrapes, seq)
		}
	}
	if len(s.scrapes) >= maxScrapes {
		req.reply <- nil
		return
	}
	s.scrapeSeq++
	sc := &Scrape{seq: s.scrapeSeq, at: now, waiting: map[int]bool{}}
	if s.opt.NodeOptions != "" { // only the preload answers
		for _, w := range s.workers {
			if w.state == ready && w.ipc != nil {
				sc.waiting[w.pid] = true
			}
		}
	}
	sc.Asked = len(sc.waiting)
	sc.answers = make(chan json.RawMessage, sc.Asked)
	sc.Answers = sc.answers
	line := preload.MetricsLine(sc.seq)
	for pid := range sc.waiting {
		s.workers[pid].ipc.send(line)
	}
	if sc.Asked > 0 {
		s.scrapes[sc.seq] = sc
	}
	req.reply <- sc
}

// onMetrics passes one worker's answer on to its scrape.
func (s *Supervisor) onMetrics(w *worker, m message) {
	sc := s.scrapes[m.Seq]
	if sc == nil || !sc.waiting[w.pid] {
		return // an answer after the loop forgot the scrape, or a repeat
	}
	delete(sc.waiting, w.pid)
	sc.answers <- m.Metrics // buffered for every worker asked
	if len(sc.waiting) == 0 {
		delete(s.scrapes, m.Seq)
	}
}
