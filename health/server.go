package health

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"

	"github.com/clusterinit/clusterinit/supervisor"
)

// Fleet is what the server needs from the supervisor
// (*supervisor.Supervisor implements it).
type Fleet interface {
	// Snapshot returns the latest published view; it must be cheap and
	// safe from any goroutine, and the result is never modified.
	Snapshot() *supervisor.Snapshot
	// Reload asks for a rolling reload, as SIGHUP does.
	Reload() error
	// AppMetrics asks every ready worker for its app's prom-client metrics.
	AppMetrics() (*supervisor.Scrape, error)
	// Alive reports whether the supervisor's loop answers within timeout.
	Alive(timeout time.Duration) error
}

// Options configure Serve.
type Options struct {
	Addr     string // host:port to listen on; port 0 picks a free one
	Fleet    Fleet
	Version  string // clusterinit's version, for /status and build_info
	MinReady int    // MIN_READY: ready workers /readyz needs
	Log      *slog.Logger
	// Config is rendered into /status as "config". It is encoded once, in
	// Serve, so it must not change afterwards.
	Config any

	// Test hooks; zero means the production value.
	reloadWait     time.Duration
	appMetricsWait time.Duration
	maxConns       int
}

const (
	// The HTTP timeouts bound what one client can hold: headers must arrive
	// within readHeaderTimeout, a whole request within readTimeout, and an
	// idle keep-alive connection is dropped after idleTimeout.
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 8 << 10

	// maxConns caps open connections. Every one is a file descriptor of
	// PID 1, which also needs descriptors to spawn workers; a scraper or
	// scanner that leaks connections must not use them up.
	maxConns = 64

	// reloadWait is how long POST /reload waits for the supervisor's loop
	// to take the request before it answers 503.
	reloadWait = 5 * time.Second
)

// Server is a running health server. Create it with Serve.
type Server struct {
	fleet      Fleet
	version    string
	minReady   int
	log        *slog.Logger
	config     json.RawMessage
	self       selfStats
	reloadWait time.Duration

	// reloading holds a token while a Fleet.Reload call is in flight, so
	// that requests against a stuck loop cannot pile up goroutines.
	reloading chan struct{}

	// appMetricsWait is how long /metrics/app waits for the workers;
	// appMetricsMissed counts the answers it went without.
	appMetricsWait   time.Duration
	appMetricsMissed atomic.Uint64

	http   *http.Server
	ln     net.Listener
	served chan struct{} // closed when http.Serve has returned
}

// Serve listens on o.Addr and serves in a goroutine. It returns once the
// socket is listening, so a bind error (address in use, not permitted) is
// returned here rather than logged later.
func Serve(o Options) (*Server, error) {
	if o.Fleet == nil {
		return nil, errors.New("start health server: no fleet given")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := json.Marshal(o.Config)
	if err != nil {
		return nil, fmt.Errorf("encode config for /status: %w", err)
	}
	s := &Server{
		fleet:          o.Fleet,
		version:        o.Version,
		minReady:       o.MinReady,
		log:            log,
		config:         cfg,
		self:           newSelfStats(log),
		reloadWait:     orDefault(o.reloadWait, reloadWait),
		appMetricsWait: orDefault(o.appMetricsWait, appMetricsWait),
		reloading:      make(chan struct{}, 1),
		served:         make(chan struct{}),
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		// net's error already reads "listen tcp ADDR: bind: address
		// already in use"; the caller adds that it was the health server.
		return nil, err
	}
	s.ln = &limitListener{Listener: ln, slots: make(chan struct{}, orDefault(o.maxConns, maxConns))}
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// net/http would otherwise print its own complaints (accept
		// errors, malformed requests) to stderr past the log format.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.served)
		if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("health server stopped", "addr", s.Addr(), "err", err)
		}
	}()
	log.Info("health server listening", "addr", s.Addr())
	return s, nil
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Close stops the server at once: it closes the listener and every
// connection, idle or busy, without waiting for slow clients. Handlers
// still running finish on their own; none of them holds anything of the
// supervisor's.
func (s *Server) Close() error {
	err := s.http.Close()
	<-s.served
	return err
}

// Addr is the address actually bound (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// Method patterns make the mux answer 405 (with Allow) for a wrong
	// method and 404 for any other path; "GET" also serves HEAD.
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /metrics/app", s.appMetrics)
	mux.HandleFunc("POST /reload", s.reload)
	return mux
}

// aliveWait bounds how long /healthz waits for the supervisor's loop. The
// loop handles one event at a time, each in well under a millisecond
// (forking a worker is the longest); 2 s of silence is a stuck loop, and it
// stays within a liveness probe's usual 5 s timeout.
const aliveWait = 2 * time.Second

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if s.fleet.Snapshot() == nil {
		writeText(w, http.StatusServiceUnavailable, "the supervisor has not started\n")
		return
	}
	if err := s.fleet.Alive(aliveWait); err != nil {
		writeText(w, http.StatusServiceUnavailable, err.Error()+"\n")
		return
	}
	writeText(w, http.StatusOK, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, line := readiness(s.fleet.Snapshot(), s.minReady)
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeText(w, code, line+"\n")
}

// readiness decides /readyz: ready while at least minReady workers are
// ready and no stop has begun. line says why, for the body and for
// `clusterinit health`.
func readiness(snap *supervisor.Snapshot, minReady int) (ok bool, line string) {
	switch {
	case snap == nil:
		return false, "not ready: the supervisor has not started"
	case snap.Stopping:
		reason := "stopping"
		if snap.StopReason != "" {
			reason += " (" + snap.StopReason + ")"
		}
		return false, "not ready: " + reason
	case snap.Ready < minReady:
		return false, fmt.Sprintf("not ready: %d of %d workers ready, need %d", snap.Ready, snap.Desired, minReady)
	}
	return true, fmt.Sprintf("ready: %d of %d workers ready", snap.Ready, snap.Desired)
}

// statusDoc is the /status body.
type statusDoc struct {
	Version    string                    `json:"version"`
	Time       time.Time                 `json:"time"` // when the supervisor made this view
	Stopping   bool                      `json:"stopping"`
	StopReason string                    `json:"stop_reason,omitempty"`
	Desired    int                       `json:"desired"`
	Ready      int                       `json:"ready"`
	MinReady   int                       `json:"min_ready"`
	Listeners  []string                  `json:"listeners"`
	Limits     statusLimits              `json:"limits"`
	Config     json.RawMessage           `json:"config"`
	Workers    []supervisor.WorkerStatus `json:"workers"`
	Counters   statusCounters            `json:"counters"`
}

// statusLimits are the detected limits; 0 and source "none" when none was
// found.
type statusLimits struct {
	CPU          float64 `json:"cpu"`
	CPUSource    string  `json:"cpu_source"`
	CPUNote      string  `json:"cpu_note,omitempty"`
	MemoryBytes  int64   `json:"memory_bytes"`
	MemorySource string  `json:"memory_source"`
	Affinity     int     `json:"affinity"`
}

type statusCounters struct {
	Starts        uint64                              `json:"starts"`
	Exits         map[supervisor.ExitReason]uint64    `json:"exits"`
	Recycles      map[supervisor.RecycleReason]uint64 `json:"recycles"`
	Reloads       map[supervisor.ReloadResult]uint64  `json:"reloads"`
	OrphansReaped uint64                              `json:"orphans_reaped"`
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	snap := s.fleet.Snapshot()
	if snap == nil {
		writeText(w, http.StatusServiceUnavailable, "the supervisor has not started\n")
		return
	}
	doc := statusDoc{
		Version:    s.version,
		Time:       snap.Time,
		Stopping:   snap.Stopping,
		StopReason: snap.StopReason,
		Desired:    snap.Desired,
		Ready:      snap.Ready,
		MinReady:   s.minReady,
		// Empty lists encode as [] rather than null, so clients can
		// iterate without a null check.
		Listeners: append([]string{}, snap.Listeners...),
		Limits: statusLimits{
			CPU: finite(snap.Limits.CPU), CPUSource: snap.Limits.CPUSource, CPUNote: snap.Limits.CPUNote(),
			MemoryBytes: snap.Limits.MemoryBytes, MemorySource: snap.Limits.MemorySource, Affinity: snap.Limits.Affinity,
		},
		Config:  s.config,
		Workers: sortedWorkers(snap.Workers),
		Counters: statusCounters{
			Starts:        snap.Starts,
			Exits:         withZeros(snap.Exits, supervisor.ExitReasons()),
			Recycles:      withZeros(snap.Recycles, supervisor.RecycleReasons()),
			Reloads:       withZeros(snap.Reloads, supervisor.ReloadResults()),
			OrphansReaped: snap.Orphans,
		},
	}
	body, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		s.log.Error("encode /status", "err", err)
		writeText(w, http.StatusInternalServerError, "encode status: "+err.Error()+"\n")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	noStore(h)
	w.Write(append(body, '\n'))
}

// sortedWorkers copies ws (the snapshot's slice must not be reordered) in
// slot order, older worker first within a slot. JSON has no NaN or Inf, so
// a non-finite figure becomes 0 rather than failing the whole document.
func sortedWorkers(ws []supervisor.WorkerStatus) []supervisor.WorkerStatus {
	out := slices.Clone(ws)
	if out == nil {
		out = []supervisor.WorkerStatus{}
	}
	slices.SortStableFunc(out, func(a, b supervisor.WorkerStatus) int {
		if a.Slot != b.Slot {
			return a.Slot - b.Slot
		}
		return a.StartedAt.Compare(b.StartedAt)
	})
	for i := range out {
		out[i].CPURatio = finite(out[i].CPURatio)
		out[i].CPUSeconds = finite(out[i].CPUSeconds)
		out[i].EventLoopDelaySec = finite(out[i].EventLoopDelaySec)
	}
	return out
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// withZeros returns a new map with every key of m plus each of keys that m
// lacks, at zero: a reason that never happened still shows, and the
// snapshot's own map is left alone.
func withZeros[K ~string](m map[K]uint64, keys []K) map[K]uint64 {
	out := make(map[K]uint64, len(m)+len(keys))
	for _, k := range keys {
		out[k] = 0
	}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	// Rendering into a buffer first means a scrape gets all of it or an
	// error, never a truncated page that parses as fewer series.
	var b bytes.Buffer
	s.writeMetrics(&b, s.fleet.Snapshot())
	h := w.Header()
	h.Set("Content-Type", metricsContentType)
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	noStore(h)
	w.Write(b.Bytes())
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	// The peer address is what the kernel reports, unlike a header, which
	// any client can set.
	if !fromLoopback(r.RemoteAddr) {
		s.log.Warn("refused a reload request from a non-loopback peer", "peer", r.RemoteAddr)
		writeText(w, http.StatusForbidden, "reload is accepted only from loopback peers\n")
		return
	}
	select {
	case s.reloading <- struct{}{}:
	default:
		writeText(w, http.StatusServiceUnavailable, "reload not started: an earlier reload request is still waiting for the supervisor\n")
		return
	}
	done := make(chan error, 1)
	go func() {
		// The token goes back when Reload returns, not when this handler
		// gives up, so a loop that never answers holds one goroutine at
		// most.
		defer func() { <-s.reloading }()
		done <- s.fleet.Reload()
	}()
	timer := time.NewTimer(s.reloadWait)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			writeText(w, http.StatusServiceUnavailable, "reload not started: "+err.Error()+"\n")
			return
		}
		s.log.Info("reload requested over HTTP", "peer", r.RemoteAddr)
		writeText(w, http.StatusAccepted, "reload started\n")
	case <-timer.C:
		writeText(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"reload not confirmed: the supervisor did not answer within %s; it may still start\n", s.reloadWait))
	case <-r.Context().Done():
		// The client is gone; whether the loop takes the request or not,
		// there is nobody to tell.
	}
}

// fromLoopback reports whether remote (an http.Request's RemoteAddr) is a
// loopback address; IPv4-mapped IPv6 forms count as IPv4.
func fromLoopback(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
}

func writeText(w http.ResponseWriter, code int, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(text)))
	noStore(h)
	w.WriteHeader(code)
	w.Write([]byte(text))
}

// noStore marks an answer as live state: a cache in between must not serve
// yesterday's readiness.
func noStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

// selfStats reads clusterinit's own process figures for /metrics.
type selfStats struct {
	proc      procfs.Proc
	ok        bool    // /proc is readable
	startTime float64 // unix seconds; 0 when unknown
}

// newSelfStats opens /proc once. The start time cannot change, so it is
// read here rather than on every scrape (it needs /proc/stat too).
func newSelfStats(log *slog.Logger) selfStats {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		log.Warn("no /proc: process_* metrics are left out", "err", err)
		return selfStats{}
	}
	proc, err := fs.Proc(os.Getpid())
	if err != nil {
		log.Warn("read /proc/self: process_* metrics are left out", "err", err)
		return selfStats{}
	}
	st := selfStats{proc: proc, ok: true}
	if stat, err := proc.Stat(); err == nil {
		if t, err := stat.StartTime(); err == nil {
			st.startTime = t
		}
	}
	return st
}

// limitListener refuses connections beyond cap(slots) by closing them at
// once. Refusing, rather than leaving them in the kernel's backlog, makes
// an overloaded server fail probes quickly and visibly.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, slots: l.slots}, nil
		default:
			c.Close()
		}
	}
}

// limitConn gives its slot back on the first Close.
type limitConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}

// CloseWrite keeps net/http's half-close on error paths working through
// the wrapper.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
