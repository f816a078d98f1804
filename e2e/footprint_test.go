package e2e

import (
	"net/http"
	"testing"
	"time"
)

// Once every worker is ready, clusterinit gives back the pages of its own
// executable that only startup used: most of its resident memory. The fleet
// keeps working afterwards (serving, a rolling reload), the pages the loop
// needs coming back on use.
func TestStartupPagesReleased(t *testing.T) {
	p, url := nodeFleet(t, 2, "http.js", "CLUSTERINIT_LOG_LEVEL=debug")
	l := p.waitLog("released startup pages", 1, 10*time.Second)[0]
	before, after := num(l, "file_rss_bytes_before"), num(l, "file_rss_bytes")
	if before <= 0 || after > before/2 {
		t.Errorf("file-backed resident memory %d -> %d bytes: want it at least halved", before, after)
	}
	if rss := vmRSS(p.pid()); rss <= 0 || rss >= int64(num(l, "rss_bytes_before")) {
		t.Errorf("resident memory is %d bytes, not below the %d before the release", rss, num(l, "rss_bytes_before"))
	}
	for range 20 {
		resp, err := http.Get(url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	p.reloads(1)
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatalf("after the release and a reload: %v", err)
	}
	resp.Body.Close()
}
