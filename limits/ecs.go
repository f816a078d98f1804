package limits

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"time"
)

const (
	metadataTimeout = 2 * time.Second
	// maxMetadataBody bounds the task document; real ones are a few KiB per
	// container.
	maxMetadataBody = 4 << 20
	mib             = 1 << 20
)

// ecsLimits holds the task-level limits; a zero field means absent.
type ecsLimits struct {
	cpu         float64 // vCPUs
	memoryBytes int64
}

// ecsTask fetches $ECS_CONTAINER_METADATA_URI_V4/task. The task endpoint is
// used rather than the container one because its Limits.CPU is the task's
// ceiling in vCPUs, where the container's is a share in CPU units.
func (d Detector) ecsTask(ctx context.Context, base string) (ecsLimits, error) {
	u, err := url.Parse(base)
	if err != nil {
		return ecsLimits{}, fmt.Errorf("parse %s: %w", ecsMetadataEnv, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ecsLimits{}, fmt.Errorf("parse %s %q: not an http(s) URL", ecsMetadataEnv, base)
	}
	u = u.JoinPath("task")

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return ecsLimits{}, fmt.Errorf("build request for %s: %w", u, err)
	}
	client := d.Client
	if client == nil {
		client = newMetadataClient()
	}
	resp, err := client.Do(req)
	if err != nil {
		return ecsLimits{}, fmt.Errorf("get task metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ecsLimits{}, fmt.Errorf("get %s: status %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBody+1))
	if err != nil {
		return ecsLimits{}, fmt.Errorf("read %s: %w", u, err)
	}
	if len(body) > maxMetadataBody {
		return ecsLimits{}, fmt.Errorf("read %s: response larger than %d bytes", u, maxMetadataBody)
	}
	t, err := parseECSTask(body)
	if err != nil {
		return ecsLimits{}, fmt.Errorf("parse %s: %w", u, err)
	}
	return t, nil
}

// newMetadataClient returns a client for the link-local metadata endpoint.
// It ignores HTTP(S)_PROXY: a proxy cannot reach 169.254.170.2 on the task's
// behalf. Keep-alives are off because the client is used once.
func newMetadataClient() *http.Client {
	return &http.Client{
		Timeout:   metadataTimeout,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
}

// parseECSTask reads Limits from a task metadata document,
//
//	{"Limits": {"CPU": 0.25, "Memory": 512}, ...}
//
// with CPU in vCPUs and Memory in MiB. Limits, or either field, is left out
// when the task definition sets no task-level limit; absent, zero, negative
// or absurdly large values come back as zero so the caller falls back to
// cgroups for that field.
func parseECSTask(data []byte) (ecsLimits, error) {
	var doc struct {
		Limits *struct {
			CPU    *float64 `json:"CPU"`
			Memory *float64 `json:"Memory"`
		} `json:"Limits"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return ecsLimits{}, fmt.Errorf("decode task metadata: %w", err)
	}
	var t ecsLimits
	if doc.Limits == nil {
		return t, nil
	}
	if c := doc.Limits.CPU; c != nil && *c > 0 {
		t.cpu = *c
	}
	if m := doc.Limits.Memory; m != nil && *m > 0 && *m < float64(math.MaxInt64/mib) {
		t.memoryBytes = int64(*m * mib)
	}
	return t, nil
}
