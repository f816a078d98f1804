package health

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"github.com/clusterinit/clusterinit/config"
)

const (
	// probeTimeout fits inside ECS's smallest healthCheck timeout (2 s).
	probeTimeout = 2 * time.Second
	// requestReloadTimeout outlasts the server's own reloadWait, so the
	// client hears the server's answer rather than timing out first.
	requestReloadTimeout = reloadWait + 5*time.Second
	// maxAnswer bounds how much of an answer is read: only its first line
	// is printed.
	maxAnswer = 4 << 10
)

// Probe is `clusterinit health`: it asks the running supervisor's /readyz
// and returns the exit status, 0 when ready and 1 otherwise. It prints one
// line: what the server answered goes to stdout; a failure to get an answer
// (server off, connection refused, timeout) goes to stderr.
func Probe(addr config.Addr, stdout, stderr io.Writer) int {
	return ask(addr, http.MethodGet, "/readyz", probeTimeout, "clusterinit health", stdout, stderr,
		http.StatusOK)
}

// RequestReload is `clusterinit reload`: it asks the running supervisor for
// a rolling reload and returns 0 when the request was accepted, 1 otherwise,
// printing one line as Probe does.
func RequestReload(addr config.Addr, stdout, stderr io.Writer) int {
	return ask(addr, http.MethodPost, "/reload", requestReloadTimeout, "clusterinit reload", stdout, stderr,
		http.StatusAccepted, http.StatusOK)
}

// ask makes one request to the health server and reports the result; it
// returns 0 when the status is one of success.
func ask(addr config.Addr, method, path string, timeout time.Duration, who string, stdout, stderr io.Writer, success ...int) int {
	a, err := call(addr, method, path, timeout, maxAnswer)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", who, err)
		return 1
	}
	line := firstLine(a.body)
	switch a.code {
	case http.StatusOK, http.StatusAccepted, http.StatusForbidden, http.StatusServiceUnavailable:
		// Statuses the health server gives with a sentence of its own.
		if line == "" {
			line = a.status
		}
	default:
		line = strings.TrimSpace(fmt.Sprintf("unexpected answer from %s: %s %s", a.url, a.status, line))
	}
	fmt.Fprintln(stdout, line)
	for _, c := range success {
		if a.code == c {
			return 0
		}
	}
	return 1
}

// reply is what the health server said.
type reply struct {
	url, status string // the request's URL, the response's "200 OK"
	code        int
	body        []byte // at most the limit asked for
}

// call makes one request to the running supervisor's health server.
func call(addr config.Addr, method, path string, timeout time.Duration, limit int64) (reply, error) {
	if addr.Off {
		return reply{}, errors.New("health server is off (CLUSTERINIT_HEALTH_ADDR=off)")
	}
	hostPort, err := dialAddr(addr.HostPort)
	if err != nil {
		return reply{}, err
	}
	url := "http://" + hostPort + path
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			// HTTP_PROXY in a container's environment is meant for the
			// app's outbound calls, never for this local request.
			Proxy:             nil,
			DisableKeepAlives: true,
		},
		// The answer of this server is the answer; a redirect would mean
		// something else listens on the port.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return reply{}, fmt.Errorf("make request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return reply{}, fmt.Errorf("read answer from %s: %w", url, err)
	}
	return reply{url: url, status: resp.Status, code: resp.StatusCode, body: body}, nil
}

// dialAddr turns the health server's listen address into one to connect
// to: a wildcard host (empty, 0.0.0.0, ::) means "every local address",
// and loopback is the one that is always there.
func dialAddr(hostPort string) (string, error) {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", fmt.Errorf("parse health address %q: %w", hostPort, err)
	}
	if port == "0" {
		return "", fmt.Errorf("connect to health address %s: port 0 picks a free port at start-up, so there is no known port to connect to", hostPort)
	}
	if host == "" {
		host = "127.0.0.1"
	} else if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.Is6() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// firstLine is the first line of an reply, without control characters, so
// that whatever listens on the port cannot garble the terminal or the
// health-check log.
func firstLine(body []byte) string {
	s, _, _ := strings.Cut(string(body), "\n")
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}
