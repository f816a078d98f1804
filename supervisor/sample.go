package supervisor

import (
	"math/rand/v2"
	"time"

	"github.com/clusterinit/clusterinit/preload"
	"github.com/clusterinit/clusterinit/procsample"
)

// Resource sampling and recycling. Every SAMPLE_EVERY the loop asks the
// sampler goroutine for one pass over /proc (so a slow /proc never delays
// reaping or signals), pings every Node worker's event loop, and checks:
//   - MAX_RSS / MAX_CPU: a worker is recycled only once its figure has stayed
//     above the limit for the whole window (MAX_RSS_FOR, MAX_CPU_FOR); one
//     sample below resets the window, so a spike never triggers;
//   - HANG_TIMEOUT: no heartbeat answered for that long.
// MAX_AGE needs no sample: each worker's age is a deadline of its own
// (deadlines.go), with up to 10% jitter taken off, so workers started
// together are not recycled together.
// A recycle is one replacement (see replace.go); while one is under way the
// others wait: for the next sample, or, for MAX_AGE, until it ends.

type sampleRequest struct {
	at   time.Time
	pids []int
}

type sampleResult struct {
	at    time.Time
	usage map[int]procsample.Usage
	err   error
}

// runSampler serves sample requests until done; it is the only goroutine
// that reads /proc for the fleet.
func (s *Supervisor) runSampler() {
	for {
		select {
		case <-s.done:
			return
		case req := <-s.sampleReqs:
			usage, err := s.opt.Sampler.Sample(req.pids)
			select {
			case s.sampleResults <- sampleResult{at: req.at, usage: usage, err: err}:
			case <-s.done:
				return
			}
		}
	}
}

// samplingEnabled: whether the loop wakes every SAMPLE_EVERY.
func (s *Supervisor) samplingEnabled() bool { return s.opt.Sampler != nil }

// sample starts a sampling pass when one is due.
func (s *Supervisor) sample(now time.Time) {
	if !s.samplingEnabled() || now.Before(s.lastSample.Add(s.cfg.SampleEvery)) {
		return
	}
	s.lastSample = now
	s.checkHangs(now)
	if s.opt.NodeOptions != "" {
		s.pingSeq++
		for _, w := range s.workers {
			if w.state == ready {
				w.ipc.send(preload.PingLine(s.pingSeq))
			}
		}
	}
	if s.sampling {
		return // the previous pass has not come back yet
	}
	pids := make([]int, 0, len(s.workers))
	for pid := range s.workers {
		pids = append(pids, pid)
	}
	select {
	case s.sampleReqs <- sampleRequest{at: now, pids: pids}:
		s.sampling = true
	default:
	}
}

// onSample records a pass's figures and recycles on sustained excess.
func (s *Supervisor) onSample(r sampleResult) {
	s.sampling = false
	if r.err != nil {
		s.log.Warn("sample workers", "err", r.err)
		return
	}
	for _, w := range s.workersByPid() {
		u, ok := r.usage[w.pid]
		if !ok {
			continue
		}
		if !w.sampledAt.IsZero() {
			w.cpuRatio = procsample.CPURatio(w.lastUsage, u, r.at.Sub(w.sampledAt))
		}
		w.lastUsage, w.sampledAt = u, r.at
		w.peakRSS = max(w.peakRSS, u.RSSBytes)

		maxRSS := s.maxRSS()
		w.rssOverSince = overSince(w.rssOverSince, maxRSS > 0 && u.RSSBytes > maxRSS, r.at)
		w.cpuOverSince = overSince(w.cpuOverSince, s.cfg.MaxCPU > 0 && w.cpuRatio > float64(s.cfg.MaxCPU), r.at)
		switch {
		case !w.rssOverSince.IsZero() && r.at.Sub(w.rssOverSince) >= s.cfg.MaxRSSFor:
			s.recycle(w, RecycleRSS, r.at, "rss_bytes", u.RSSBytes, "max_rss", maxRSS,
				"above_for", r.at.Sub(w.rssOverSince).Round(time.Millisecond), "processes", u.Procs)
		case !w.cpuOverSince.IsZero() && r.at.Sub(w.cpuOverSince) >= s.cfg.MaxCPUFor:
			s.recycle(w, RecycleCPU, r.at, "cpu_ratio", round3(w.cpuRatio), "max_cpu", s.cfg.MaxCPU.String(),
				"above_for", r.at.Sub(w.cpuOverSince).Round(time.Millisecond), "processes", u.Procs)
		}
	}
}

// overSince tracks when a figure went over its limit: the first time over,
// kept while over, cleared by one sample under.
func overSince(since time.Time, over bool, at time.Time) time.Time {
	switch {
	case !over:
		return time.Time{}
	case since.IsZero():
		return at
	}
	return since
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// onPong records a heartbeat and the runtime figures it carries.
func (s *Supervisor) onPong(w *worker, m message, now time.Time) {
	w.lastBeat = now
	w.beat = m.Message
	s.checkRequests(w, now)
}

// requestLimit is the MAX_REQUESTS of one worker: up to 10% less, at random,
// so that workers started together are not recycled together (Gunicorn's
// max_requests_jitter); 0: off.
func requestLimit(maxRequests int) uint64 {
	if maxRequests <= 0 {
		return 0
	}
	return uint64(maxRequests) - rand.Uint64N(uint64(maxRequests)/10+1)
}

// checkRequests recycles w once it has answered its MAX_REQUESTS. While
// another replacement is under way, recycle declines and the next pong, one
// SAMPLE_EVERY later, tries again: never two at once.
func (s *Supervisor) checkRequests(w *worker, now time.Time) {
	if w.requestLimit == 0 || w.state != ready || w.beat.Requests < w.requestLimit {
		return
	}
	s.recycle(w, RecycleRequests, now, "requests", w.beat.Requests, "max_requests", w.requestLimit)
}

// checkHangs recycles ready Node workers whose event loop has not answered
// a heartbeat for HANG_TIMEOUT.
func (s *Supervisor) checkHangs(now time.Time) {
	if s.cfg.HangTimeout <= 0 || s.opt.NodeOptions == "" {
		return
	}
	for _, w := range s.workersByPid() {
		if w.state != ready {
			continue
		}
		last := w.lastBeat
		if last.Before(w.readyAt) {
			last = w.readyAt
		}
		if silent := now.Sub(last); silent >= s.cfg.HangTimeout {
			s.recycle(w, RecycleHang, now, "silent_for", silent.Round(time.Millisecond), "hang_timeout", s.cfg.HangTimeout)
		}
	}
}

// ageJitter is what is taken off MAX_AGE for one worker: up to 10%.
func ageJitter(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(maxAge)/10 + 1))
}

// ageDeadline is when w is recycled for MAX_AGE (zero: never).
func (s *Supervisor) ageDeadline(w *worker) time.Time {
	if s.cfg.MaxAge <= 0 {
		return time.Time{}
	}
	return w.startedAt.Add(s.cfg.MaxAge - w.ageJitter)
}

// canRecycle: w serves its slot, nothing else is being replaced or waiting
// to be (a reload), and no replaced worker is still handing over, so a
// recycle of w may start.
func (s *Supervisor) canRecycle(w *worker) bool {
	sl := s.slotOf(w.slot)
	return !s.stopping && s.replacing == nil && s.reloadQueue == nil && !s.handingOver() &&
		sl != nil && sl.current == w && w.state == ready
}

// recycle replaces w for reason, if nothing else is being replaced and no
// recycle failed within its backoff; else it is tried again later: at the
// next sample, its figures still over the limit, or (MAX_AGE) as soon as
// the replacement under way ends.
func (s *Supervisor) recycle(w *worker, reason RecycleReason, now time.Time, figures ...any) {
	if !s.canRecycle(w) || now.Before(s.recycleRetryAt) {
		return
	}
	startFirst, headroom := s.replacementPath(w)
	attrs := append([]any{"slot", w.slot, "pid", w.pid, "reason", reason, "path", pathName(startFirst), "headroom_bytes", headroom}, figures...)
	s.log.Info("recycling worker", attrs...)
	s.replace(s.slotOf(w.slot), reason, startFirst, now)
}

// replacementPath decides how w is replaced, for a recycle and for a step of
// a reload alike (SPEC, "Recycling"): start-first when the container's
// memory headroom fits another worker of w's size, else drain-first, except
// that the fleet's last ready worker is always replaced start-first, so a
// replacement never leaves no worker serving. headroom is -1 when unknown
// (no memory limit, or it could not be read): then start-first.
func (s *Supervisor) replacementPath(w *worker) (startFirst bool, headroom int64) {
	startFirst, headroom = true, -1
	if s.opt.Headroom != nil {
		if h, err := s.opt.Headroom(); err == nil {
			headroom = h
			startFirst = h >= w.lastUsage.RSSBytes
		} else {
			s.log.Warn("read memory headroom", "err", err)
		}
	}
	if !startFirst && s.readyCount() <= 1 {
		startFirst = true
		s.log.Warn("memory headroom is short, but this is the only ready worker: starting its replacement first",
			"slot", w.slot, "pid", w.pid, "headroom_bytes", headroom)
	}
	return startFirst, headroom
}

func pathName(startFirst bool) string {
	if startFirst {
		return "start-first"
	}
	return "drain-first"
}

func (s *Supervisor) readyCount() int {
	n := 0
	for _, w := range s.workers {
		if w.state == ready {
			n++
		}
	}
	return n
}
