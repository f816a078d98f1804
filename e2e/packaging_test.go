package e2e

// Packaging: the binary `make build` makes (the one build command, which the
// Dockerfile runs too), and the examples under examples/.

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clusterinit/clusterinit/config"
)

// maxBinarySize is what the packaged binary must stay under: it is copied
// into every application image.
const maxBinarySize = 12 << 20

var packaged struct {
	once sync.Once
	path string
	out  string
	err  error
}

// packagedBinary runs `make build` once, into the directory of TestMain's
// binary (removed when the tests end), and returns the binary it made.
func packagedBinary(t *testing.T) string {
	t.Helper()
	packaged.once.Do(func() {
		dir := filepath.Join(filepath.Dir(binary), "make-build")
		if packaged.err = os.MkdirAll(dir, 0o755); packaged.err != nil {
			return
		}
		packaged.path = filepath.Join(dir, "clusterinit")
		out, err := exec.Command("make", "--no-print-directory", "build", "BIN="+packaged.path).CombinedOutput()
		packaged.out, packaged.err = string(out), err
	})
	if packaged.err != nil {
		t.Fatalf("make build: %v\n%s", packaged.err, packaged.out)
	}
	return packaged.path
}

// checkStatic fails the test unless path is a statically linked ELF
// executable: no program interpreter (the dynamic loader), no dynamic
// section, no shared library needed.
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("%s: ELF type %v, want %v (a position-dependent static executable)", path, f.Type, elf.ET_EXEC)
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Errorf("%s: has a program interpreter (PT_INTERP): dynamically linked", path)
		case elf.PT_DYNAMIC:
			t.Errorf("%s: has a dynamic section (PT_DYNAMIC)", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", path, libs)
	}
}

// The binary `make build` makes is static, stripped, built with -trimpath
// and CGO_ENABLED=0, and small.
func TestStaticPackagedBinary(t *testing.T) {
	needLong(t)
	bin := packagedBinary(t)
	checkStatic(t, bin)

	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("make build: %s, %d bytes (%.1f MiB)", bin, fi.Size(), float64(fi.Size())/(1<<20))
	if fi.Size() >= maxBinarySize {
		t.Errorf("binary is %d bytes, want < %d", fi.Size(), maxBinarySize)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(s) != nil {
			t.Errorf("binary has a %s section: not stripped (-s -w)", s)
		}
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("built with CGO_ENABLED=%q, want 0", settings["CGO_ENABLED"])
	}
	// (With -trimpath, Go leaves -ldflags out of the build settings; the
	// missing symbol and DWARF sections above show -s -w.)
	if settings["-trimpath"] != "true" {
		t.Errorf("not built with -trimpath (build settings %v)", settings)
	}
}

// `version` prints what `git describe` says of the tree it was built from.
func TestPackagedBinaryVersion(t *testing.T) {
	bin := packagedBinary(t)
	out, err := exec.Command("git", "describe", "--tags", "--always").Output()
	if err != nil {
		t.Fatalf("git describe: %v", err)
	}
	desc := strings.TrimSpace(string(out))
	got, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	// Others may edit tracked files between the build and now, so accept the
	// description with or without -dirty.
	line := strings.TrimSpace(string(got))
	if line != "clusterinit "+desc && line != "clusterinit "+desc+"-dirty" {
		t.Errorf("version printed %q, want %q (or with -dirty)", line, "clusterinit "+desc)
	}
	t.Logf("%s", line)
}

// The packaged binary runs from an empty root, as in a FROM scratch image
// holding only /clusterinit and a static server: no /proc, /dev, /tmp or
// /etc.
func TestEmptyRootChroot(t *testing.T) {
	needLong(t)
	bin := packagedBinary(t)
	root := t.TempDir()
	copyExecutable(t, bin, filepath.Join(root, "clusterinit"))
	worker := filepath.Join(root, "worker")
	build := exec.Command("go", "build", "-o", worker, "./testdata/static-worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the static worker: %v\n%s", err, out)
	}
	checkStatic(t, worker)
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"clusterinit", "worker"}) {
		t.Fatalf("the root holds %v, want only clusterinit and worker", names)
	}

	addr := freeAddr(t)
	env := testEnv("CLUSTERINIT_SHIM=false", "CLUSTERINIT_LISTEN="+addr,
		"CLUSTERINIT_HEALTH_ADDR=off", "CLUSTERINIT_WORKERS=2")
	p := startArgv(t, false, env, "chroot", root, "/clusterinit", "--", "/worker")
	waitReady(p, 2, 20*time.Second)

	seen := answeringWorkers(t, "http://"+addr+"/", 2, 15*time.Second, func(body string) string {
		// "worker N pid P"
		if f := strings.Fields(body); len(f) >= 2 && f[0] == "worker" {
			return f[1]
		}
		return ""
	})
	t.Logf("answered by workers %v", seen)

	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	for _, l := range p.exits() {
		if l["status"] != "exit code 0" {
			t.Errorf("worker %v exited with %v, want exit code 0", l["slot"], l["status"])
		}
	}
}

// copyExecutable copies the file src to dst, mode 0755.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady waits until n workers are ready, failing at once with
// clusterinit's exit status and log if it exits first.
func waitReady(p *proc, n int, timeout time.Duration) {
	p.t.Helper()
	waitFor(p.t, timeout, fmt.Sprintf("%d workers ready", n), func() bool {
		select {
		case <-p.done:
			p.t.Fatalf("clusterinit exited with status %d before %d workers were ready:\n%s",
				p.state.ExitCode(), n, tail(p.stderr.String(), 30))
		default:
		}
		return len(p.logsWith("worker ready")) >= n
	})
}

// answeringWorkers GETs url on fresh connections until n distinct workers,
// as told by slotOf(body), have answered 200.
func answeringWorkers(t *testing.T, url string, n int, timeout time.Duration, slotOf func(string) string) []string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	seen := map[string]bool{}
	var lastErr error
	deadline := time.Now().Add(timeout)
	for len(seen) < n {
		if time.Now().After(deadline) {
			t.Fatalf("within %v only workers %v answered %s (last error: %v)", timeout, seen, url, lastErr)
		}
		resp, err := client.Get(url)
		if err != nil {
			lastErr = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			lastErr = fmt.Errorf("status %d: %s", resp.StatusCode, body)
			continue
		}
		if s := slotOf(string(body)); s != "" {
			seen[s] = true
		}
	}
	var slots []string
	for s := range seen {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	return slots
}

// The Dockerfile builds with `make build` (so the image holds the binary the
// tests check) into a FROM scratch image holding /clusterinit, and the
// examples' Dockerfiles copy it from there and make it the entrypoint.
func TestPackagingDockerfiles(t *testing.T) {
	df := readText(t, "Dockerfile")
	stages := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(stages) < 2 || stages[len(stages)-1][1] != "scratch" {
		t.Errorf("Dockerfile: the final stage is not FROM scratch: %v", stages)
	}
	if !regexp.MustCompile(`(?m)^RUN\b.*\bmake build\b`).MatchString(df) {
		t.Errorf("Dockerfile does not build with `make build`")
	}
	// The platform asked for (TARGETARCH) is what make build builds for.
	if !regexp.MustCompile(`(?m)^ARG TARGETARCH$`).MatchString(df) ||
		!regexp.MustCompile(`GOARCH="\$\{TARGETARCH:-\$\(go env GOHOSTARCH\)\}"`).MatchString(df) {
		t.Errorf("Dockerfile does not build for TARGETARCH (ARG TARGETARCH, make build GOARCH=$TARGETARCH)")
	}
	if !regexp.MustCompile(`(?m)^COPY --from=\S+ \S+ /clusterinit$`).MatchString(df) {
		t.Errorf("Dockerfile does not put the binary at /clusterinit")
	}

	for _, path := range []string{"examples/express/Dockerfile", "examples/nextjs/Dockerfile"} {
		df := readText(t, path)
		if !strings.Contains(df, "\nCOPY --from=clusterinit /clusterinit /clusterinit\n") {
			t.Errorf("%s: no COPY --from=clusterinit /clusterinit /clusterinit", path)
		}
		m := regexp.MustCompile(`(?m)^ENTRYPOINT (\[.*\])$`).FindAllStringSubmatch(df, -1)
		if len(m) != 1 {
			t.Errorf("%s: want one exec-form ENTRYPOINT, found %d", path, len(m))
			continue
		}
		var argv []string
		if err := json.Unmarshal([]byte(m[0][1]), &argv); err != nil {
			t.Errorf("%s: ENTRYPOINT is not a JSON array: %v", path, err)
			continue
		}
		if want := []string{"/clusterinit", "--", "node", "server.js"}; !slices.Equal(argv, want) {
			t.Errorf("%s: ENTRYPOINT %q, want %q", path, argv, want)
		}
	}
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// varName matches a CLUSTERINIT_* variable name in prose or code.
var varName = regexp.MustCompile(`CLUSTERINIT_[A-Z0-9_]*[A-Z0-9]`)

// Every CLUSTERINIT_* variable that an example or the README's packaging
// sections name exists.
func TestExampleVariablesExist(t *testing.T) {
	known := map[string]bool{
		// What workers receive (SPEC.md), not a setting.
		"CLUSTERINIT_WORKER": true,
	}
	for _, v := range config.Variables() {
		known[v.Name] = true
	}
	texts := map[string]string{}
	err := filepath.WalkDir("examples", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		texts[path] = readText(t, path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	readme := readText(t, "README.md")
	if i := strings.Index(readme, "\n## Docker and examples\n"); i >= 0 {
		texts["README.md (packaging sections)"] = readme[i:]
	} else {
		t.Errorf("README.md has no \"## Docker and examples\" section")
	}
	total := 0
	for path, text := range texts {
		for _, name := range varName.FindAllString(text, -1) {
			total++
			if !known[name] {
				t.Errorf("%s names %s, which is not a clusterinit variable", path, name)
			}
		}
	}
	if total == 0 {
		t.Fatal("no CLUSTERINIT_* variable found in the examples")
	}
}

// exampleEnv is an example's environment for clusterinit, loaded as
// clusterinit loads its own: every value must be accepted.
func exampleEnv(t *testing.T, where string, env []string) *config.Config {
	t.Helper()
	n := 0
	for _, kv := range env {
		if strings.HasPrefix(kv, "CLUSTERINIT_") {
			n++
		}
	}
	if n == 0 {
		t.Errorf("%s sets no CLUSTERINIT_* variable", where)
	}
	cfg, err := config.Load(env)
	if err != nil {
		t.Fatalf("%s: clusterinit rejects the environment:\n%v", where, err)
	}
	return cfg
}

// listenPorts are the ports of clusterinit's LISTEN addresses.
func listenPorts(t *testing.T, cfg *config.Config) []int {
	t.Helper()
	var ports []int
	for _, a := range cfg.Listen.Addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatalf("LISTEN address %q: %v", a, err)
		}
		n, _ := strconv.Atoi(p)
		ports = append(ports, n)
	}
	return ports
}

// checkMaxRSS checks that MAX_RSS is set and that workers+1 workers of that
// size fit in the memory limit, so that a recycle can start the replacement
// before the old worker drains.
func checkMaxRSS(t *testing.T, where string, cfg *config.Config, workers int, memory int64) {
	t.Helper()
	if cfg.MaxRSS.Size <= 0 {
		t.Errorf("%s: no CLUSTERINIT_MAX_RSS suggested", where)
		return
	}
	need := int64(workers+1) * int64(cfg.MaxRSS.Size)
	t.Logf("%s: %d workers; (%d+1) × MAX_RSS %v = %d bytes of %d", where, workers, workers, cfg.MaxRSS, need, memory)
	if need > memory {
		t.Errorf("%s: (%d workers + 1) × MAX_RSS %v = %d bytes exceeds the memory limit %d", where, workers, cfg.MaxRSS, need, memory)
	}
}

type ecsTaskDefinition struct {
	CPU                  string `json:"cpu"`
	Memory               string `json:"memory"`
	ContainerDefinitions []struct {
		Name        string `json:"name"`
		Essential   *bool  `json:"essential"`
		Environment []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"environment"`
		PortMappings []struct {
			ContainerPort int `json:"containerPort"`
		} `json:"portMappings"`
		StopTimeout *int `json:"stopTimeout"`
		HealthCheck *struct {
			Command     []string `json:"command"`
			Interval    int      `json:"interval"`
			Timeout     int      `json:"timeout"`
			Retries     int      `json:"retries"`
			StartPeriod int      `json:"startPeriod"`
		} `json:"healthCheck"`
	} `json:"containerDefinitions"`
}

func TestExampleECSTaskDefinition(t *testing.T) {
	const path = "examples/ecs-task-definition.json"
	raw := []byte(readText(t, path))
	dec := json.NewDecoder(bytes.NewReader(raw))
	var td ecsTaskDefinition
	if err := dec.Decode(&td); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dec.More() {
		t.Fatalf("%s: more than one JSON value", path)
	}
	// clusterinit is the init: tini in front of it adds nothing.
	if bytes.Contains(raw, []byte("initProcessEnabled")) {
		t.Errorf("%s sets initProcessEnabled", path)
	}
	if len(td.ContainerDefinitions) != 1 {
		t.Fatalf("%s: want one container definition, got %d", path, len(td.ContainerDefinitions))
	}
	c := td.ContainerDefinitions[0]
	var env []string
	for _, e := range c.Environment {
		env = append(env, e.Name+"="+e.Value)
	}
	cfg := exampleEnv(t, path, env)

	if c.HealthCheck == nil {
		t.Errorf("%s: no healthCheck", path)
	} else {
		if want := []string{"CMD", "/clusterinit", "health"}; !slices.Equal(c.HealthCheck.Command, want) {
			t.Errorf("%s: healthCheck.command %q, want %q", path, c.HealthCheck.Command, want)
		}
		if cfg.HealthAddr.Off {
			t.Errorf("%s: `clusterinit health` needs the health server, but HEALTH_ADDR is off", path)
		}
		// ECS's accepted ranges.
		hc := c.HealthCheck
		if hc.Interval < 5 || hc.Interval > 300 || hc.Timeout < 2 || hc.Timeout > 60 || hc.Timeout >= hc.Interval ||
			hc.Retries < 1 || hc.Retries > 10 || hc.StartPeriod < 0 || hc.StartPeriod > 300 {
			t.Errorf("%s: healthCheck timing outside what ECS accepts: %+v", path, *hc)
		}
	}

	// stopTimeout covers STOP_DELAY + DRAIN_TIMEOUT, with a second for
	// clusterinit to exit after its deadline; Fargate allows up to 120 s.
	stop := cfg.StopDelay + cfg.DrainTimeout
	if c.StopTimeout == nil {
		t.Errorf("%s: no stopTimeout (ECS's default is 30s): set it with DRAIN_TIMEOUT", path)
	} else {
		got := time.Duration(*c.StopTimeout) * time.Second
		t.Logf("%s: stopTimeout %v, STOP_DELAY %v + DRAIN_TIMEOUT %v = %v", path, got, cfg.StopDelay, cfg.DrainTimeout, stop)
		if got < stop+time.Second {
			t.Errorf("%s: stopTimeout %v does not exceed STOP_DELAY + DRAIN_TIMEOUT = %v", path, got, stop)
		}
		if got > 120*time.Second {
			t.Errorf("%s: stopTimeout %v is over Fargate's 120s", path, got)
		}
	}

	// The container port is one clusterinit binds.
	ports := listenPorts(t, cfg)
	for _, pm := range c.PortMappings {
		if !slices.Contains(ports, pm.ContainerPort) {
			t.Errorf("%s: containerPort %d is not a LISTEN port %v", path, pm.ContainerPort, ports)
		}
	}

	// MAX_RSS fits the task: WORKERS=auto takes Limits.CPU (task cpu units
	// / 1024) rounded up.
	cpuUnits, err1 := strconv.Atoi(td.CPU)
	memMiB, err2 := strconv.Atoi(td.Memory)
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: task cpu %q / memory %q are not numbers", path, td.CPU, td.Memory)
	}
	workers := cfg.Workers.N
	if cfg.Workers.Auto {
		workers = int(math.Ceil(float64(cpuUnits) / 1024))
	}
	checkMaxRSS(t, path, cfg, workers, int64(memMiB)<<20)
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
}

type k8sContainer struct {
	Name  string `yaml:"name"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Lifecycle      *struct {
		PreStop *struct {
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
}

type k8sObject struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
				Containers                    []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func TestExampleKubernetesManifest(t *testing.T) {
	const path = "examples/kubernetes.yaml"
	dec := yaml.NewDecoder(strings.NewReader(readText(t, path)))
	var deployments []k8sObject
	for {
		var obj k8sObject
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if obj.Kind == "Deployment" {
			deployments = append(deployments, obj)
		}
	}
	if len(deployments) != 1 {
		t.Fatalf("%s: want one Deployment, got %d", path, len(deployments))
	}
	pod := deployments[0].Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: want one container, got %d", path, len(pod.Containers))
	}
	c := pod.Containers[0]
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	cfg := exampleEnv(t, path, env)

	// terminationGracePeriodSeconds covers a preStop hook, STOP_DELAY and
	// DRAIN_TIMEOUT, with a second for clusterinit to exit.
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		ps := c.Lifecycle.PreStop
		switch {
		case ps.Sleep != nil:
			preStop = time.Duration(ps.Sleep.Seconds) * time.Second
		case ps.Exec != nil && len(ps.Exec.Command) == 2 && ps.Exec.Command[0] == "sleep":
			n, err := strconv.Atoi(ps.Exec.Command[1])
			if err != nil {
				t.Fatalf("%s: preStop %q", path, ps.Exec.Command)
			}
			preStop = time.Duration(n) * time.Second
		default:
			t.Fatalf("%s: a preStop hook this test cannot time", path)
		}
	}
	need := preStop + cfg.StopDelay + cfg.DrainTimeout
	if pod.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds (the default 30s is not tied to DRAIN_TIMEOUT)", path)
	} else {
		grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		t.Logf("%s: grace %v; preStop %v + STOP_DELAY %v + DRAIN_TIMEOUT %v = %v", path, grace, preStop, cfg.StopDelay, cfg.DrainTimeout, need)
		if grace < need+time.Second {
			t.Errorf("%s: terminationGracePeriodSeconds %v does not exceed preStop + STOP_DELAY + DRAIN_TIMEOUT = %v", path, grace, need)
		}
	}
	if preStop == 0 && cfg.StopDelay == 0 {
		t.Errorf("%s: neither a preStop sleep nor STOP_DELAY: the pod stops serving before proxies forget it", path)
	}

	// Probes reach the health server.
	portOf := func(p any) int {
		switch v := p.(type) {
		case int:
			return v
		case string:
			for _, cp := range c.Ports {
				if cp.Name == v {
					return cp.ContainerPort
				}
			}
		}
		t.Fatalf("%s: probe port %v is not a container port", path, p)
		return 0
	}
	checkProbe := func(kind string, p *k8sProbe, wantPath string) {
		if p == nil {
			t.Errorf("%s: no %s", path, kind)
			return
		}
		if cfg.HealthAddr.Off {
			t.Fatalf("%s: %s needs the health server, but HEALTH_ADDR is off", path, kind)
		}
		host, hport, _ := net.SplitHostPort(cfg.HealthAddr.HostPort)
		switch {
		case p.HTTPGet != nil:
			if p.HTTPGet.Path != wantPath {
				t.Errorf("%s: %s GETs %q, want %q", path, kind, p.HTTPGet.Path, wantPath)
			}
			if strconv.Itoa(portOf(p.HTTPGet.Port)) != hport {
				t.Errorf("%s: %s port %v is not HEALTH_ADDR's %s", path, kind, p.HTTPGet.Port, hport)
			}
			// The kubelet connects to the pod's IP, not its loopback.
			if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
				t.Errorf("%s: %s is an httpGet, but HEALTH_ADDR %s does not listen on the pod's address", path, kind, cfg.HealthAddr.HostPort)
			}
		case p.Exec != nil:
			// `clusterinit health` probes /readyz.
			if wantPath != "/readyz" || !slices.Equal(p.Exec.Command, []string{"/clusterinit", "health"}) {
				t.Errorf("%s: %s runs %q", path, kind, p.Exec.Command)
			}
		default:
			t.Errorf("%s: %s is neither httpGet nor exec", path, kind)
		}
	}
	checkProbe("readinessProbe", c.ReadinessProbe, "/readyz")
	// Liveness must not be /readyz: draining or restarting workers make a
	// pod unready, not dead.
	checkProbe("livenessProbe", c.LivenessProbe, "/healthz")

	ports := listenPorts(t, cfg)
	for _, cp := range c.Ports {
		if cp.Name == "http" && !slices.Contains(ports, cp.ContainerPort) {
			t.Errorf("%s: container port %d is not a LISTEN port %v", path, cp.ContainerPort, ports)
		}
	}

	// WORKERS=auto reads the CPU limit from the cgroup.
	cpu, ok := c.Resources.Limits["cpu"]
	if !ok {
		t.Fatalf("%s: no resources.limits.cpu for WORKERS=auto", path)
	}
	var cpus float64
	if m, ok := strings.CutSuffix(cpu, "m"); ok {
		n, err := strconv.Atoi(m)
		if err != nil {
			t.Fatalf("%s: limits.cpu %q", path, cpu)
		}
		cpus = float64(n) / 1000
	} else {
		var err error
		if cpus, err = strconv.ParseFloat(cpu, 64); err != nil {
			t.Fatalf("%s: limits.cpu %q", path, cpu)
		}
	}
	workers := cfg.Workers.N
	if cfg.Workers.Auto {
		workers = int(math.Ceil(cpus))
	}
	var mem config.Size
	if err := mem.UnmarshalText([]byte(c.Resources.Limits["memory"])); err != nil || mem <= 0 {
		t.Fatalf("%s: limits.memory %q: %v", path, c.Resources.Limits["memory"], err)
	}
	checkMaxRSS(t, path, cfg, workers, int64(mem))
}

// ensureNodeApp runs testdata/setup-node-apps.sh when want, a file that it
// makes, is missing.
func ensureNodeApp(t *testing.T, want string) {
	t.Helper()
	if _, err := os.Stat(want); err == nil {
		return
	}
	out, err := exec.Command("testdata/setup-node-apps.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("testdata/setup-node-apps.sh: %v\n%s", err, tail(string(out), 40))
	}
	if _, err := os.Stat(want); err != nil {
		t.Fatalf("testdata/setup-node-apps.sh did not make %s", want)
	}
}

// examples/express/server.js, unchanged, serves under clusterinit and stops
// cleanly. Its one dependency, express, comes from testdata/express, whose
// package.json pins the same version.
func TestExampleExpressStartsUnderClusterinit(t *testing.T) {
	ensureNodeApp(t, "testdata/express/node_modules/express/package.json")
	modules, err := filepath.Abs("testdata/express/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	p := start(t, false, testEnv("CLUSTERINIT_WORKERS=2", "CLUSTERINIT_LISTEN="+addr, "PORT="+port, "NODE_PATH="+modules),
		"--", "node", "examples/express/server.js")
	waitReady(p, 2, 30*time.Second)

	seen := answeringWorkers(t, "http://"+addr+"/", 2, 15*time.Second, func(body string) string {
		var r struct {
			Hello  string `json:"hello"`
			Worker string `json:"worker"`
		}
		if json.Unmarshal([]byte(body), &r) != nil || r.Hello != "world" {
			return ""
		}
		return r.Worker
	})
	t.Logf("answered by workers %v", seen)

	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	if crashes := p.logsWith("worker exited unexpectedly"); len(crashes) > 0 {
		t.Errorf("workers crashed: %v", crashes)
	}
}

// The Next.js HOSTNAME pitfall that examples/nextjs/README.md describes is
// real, and clusterinit removes it: with HOSTNAME naming another address,
// or a name that does not resolve, the standalone server under clusterinit
// answers on 127.0.0.1.
func TestExampleNextjsHostname(t *testing.T) {
	server, err := filepath.Abs("testdata/nextjs/.next/standalone/server.js")
	if err != nil {
		t.Fatal(err)
	}
	ensureNodeApp(t, server)

	// Without clusterinit, HOSTNAME=127.0.0.2 makes the server listen on
	// 127.0.0.2 only.
	t.Run("pitfall without clusterinit", func(t *testing.T) {
		addr := freeAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command("node", server)
		cmd.Env = append(testEnv(), "PORT="+port, "HOSTNAME=127.0.0.2")
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
		}()
		waitFor(t, 20*time.Second, "the server on 127.0.0.2:"+port, func() bool {
			c, err := net.Dial("tcp", "127.0.0.2:"+port)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("the server also listens on %s: no pitfall to show", addr)
		}
	})

	for _, hostname := range []string{"127.0.0.2", "web-7f9c6d.invalid"} {
		t.Run("HOSTNAME="+hostname, func(t *testing.T) {
			addr := freeAddr(t)
			_, port, _ := net.SplitHostPort(addr)
			p := start(t, false, testEnv("CLUSTERINIT_WORKERS=2", "CLUSTERINIT_LISTEN="+addr, "PORT="+port, "HOSTNAME="+hostname),
				"--", "node", server)
			waitReady(p, 2, 60*time.Second)
			client := &http.Client{Timeout: 10 * time.Second}
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				t.Fatalf("GET on %s: %v", addr, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET on %s: status %d", addr, resp.StatusCode)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(30 * time.Second); code != 0 {
				t.Errorf("exit status %d after SIGTERM, want 0", code)
			}
			if crashes := p.logsWith("worker exited unexpectedly"); len(crashes) > 0 {
				t.Errorf("workers crashed: %v", crashes)
			}
		})
	}
}
