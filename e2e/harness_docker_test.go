package e2e

// The container part of the harness: a docker daemon (found, or started for
// this test binary), an image built FROM scratch out of local files (no
// registry is reachable in CI), and containers the tests drive with the
// docker CLI, as an operator would.

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// dockerd is the daemon the container tests use, found or started once per
// test binary run; dockerCleanup (deferred by TestMain) removes what the
// tests left and stops a daemon they started.
var dockerd struct {
	once   sync.Once
	host   string // DOCKER_HOST for the CLI
	err    error
	cmd    *exec.Cmd     // the dockerd started here, if any
	exited chan struct{} // closed when it has exited
	dir    string        // its data-root, exec-root, socket and log

	imageOnce sync.Once
	image     string // the test image's tag, once built
	imageErr  error
}

// dockerLabel marks the containers of this test binary run, so that
// dockerCleanup finds any a test left.
var dockerLabel = fmt.Sprintf("clusterinit-e2e=%d", os.Getpid())

// needDocker returns the DOCKER_HOST of a running docker daemon: DOCKER_HOST
// if set (CI's .ci/run starts one and sets it), else the default socket, else
// one started here when running as root with docker.io installed. With none
// of these the test is skipped, or fails under E2E_ALL=1.
func needDocker(t *testing.T) string {
	t.Helper()
	dockerd.once.Do(func() { dockerd.host, dockerd.err = findDocker() })
	need(t, "docker (a daemon at DOCKER_HOST or /var/run/docker.sock, or root with docker.io installed)", dockerd.err)
	return dockerd.host
}

func findDocker() (string, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return "", fmt.Errorf("no docker CLI: %w", err)
	}
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = "unix:///var/run/docker.sock"
	}
	err := pingDocker(host)
	if err == nil || os.Getenv("DOCKER_HOST") != "" {
		return host, err
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("no daemon at %s (%v), and not root to start one", host, err)
	}
	if _, lerr := exec.LookPath("dockerd"); lerr != nil {
		return "", fmt.Errorf("no daemon at %s (%v), and no dockerd to start (apt-get install docker.io): %w", host, err, lerr)
	}
	return startDockerd()
}

// pingDocker asks the daemon at host for its version.
func pingDocker(host string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}")
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker version at %s: %w: %s", host, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startDockerd runs a dockerd of the tests' own, as .ci/run does: the
// cgroupfs driver (cgroup v1 without systemd), and its own data-root,
// exec-root, pidfile and socket beside TestMain's binary, so that it clashes
// with no other daemon's state.
func startDockerd() (string, error) {
	dir := filepath.Join(filepath.Dir(binary), "dockerd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	host := "unix://" + filepath.Join(dir, "docker.sock")
	logPath := filepath.Join(dir, "dockerd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command("dockerd", "--exec-opt", "native.cgroupdriver=cgroupfs",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "--host", host)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start dockerd: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	dockerd.cmd, dockerd.exited, dockerd.dir = cmd, exited, dir
	var pingErr error
	gone := false
	if testkit.PollEvery(60*time.Second, 200*time.Millisecond, func() bool {
		select {
		case <-exited:
			gone = true
			return true
		default:
		}
		pingErr = pingDocker(host)
		return pingErr == nil
	}) && !gone {
		return host, nil
	}
	if gone {
		return "", fmt.Errorf("dockerd exited (%v) before answering: %s", cmd.ProcessState, tail(readOr(logPath), 20))
	}
	return "", fmt.Errorf("dockerd not answering after 60s: %v: %s", pingErr, tail(readOr(logPath), 20))
}

// dockerCleanup removes the containers and the image of this run and stops
// the dockerd started here, if any. TestMain defers it.
func dockerCleanup() {
	if dockerd.host == "" || dockerd.err != nil {
		return
	}
	if ids, err := dockerCLI(dockerd.host, "ps", "-aq", "--filter", "label="+dockerLabel); err == nil && ids != "" {
		dockerCLI(dockerd.host, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	if dockerd.image != "" {
		dockerCLI(dockerd.host, "rmi", "-f", dockerd.image)
	}
	if dockerd.cmd == nil {
		return
	}
	dockerd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dockerd.exited:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "e2e: dockerd did not stop within 30s of SIGTERM: killing it")
		dockerd.cmd.Process.Kill()
		<-dockerd.exited
	}
}

// dockerCLI runs the docker CLI against host and returns its trimmed stdout;
// an error carries its stderr.
func dockerCLI(host string, args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func readOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// imageNode is where the image holds node; its PATH finds it there.
const imageNode = "/usr/local/bin/node"

// testImage returns the tag of the test image, built once per test binary
// run FROM scratch: `make build`'s binary at /clusterinit, the node first on
// PATH (so CI's Node line is what runs) with the shared libraries ldd lists
// at their paths, the apps of testdata/apps in /app, an empty /tmp, and
// HEALTHCHECK in exec form, as an image without a shell needs.
func testImage(t *testing.T) string {
	t.Helper()
	host := needDocker(t)
	bin := packagedBinary(t)
	dockerd.imageOnce.Do(func() {
		tag := fmt.Sprintf("clusterinit-e2e:%d-%d", os.Getpid(), time.Now().UnixNano())
		start := time.Now()
		dockerd.imageErr = buildImage(host, tag, bin)
		if dockerd.imageErr == nil {
			dockerd.image = tag
			size, _ := dockerCLI(host, "image", "inspect", "--format", "{{.Size}}", tag)
			fmt.Fprintf(os.Stderr, "e2e: built image %s (%s bytes) in %v\n", tag, size, time.Since(start).Round(time.Millisecond))
		}
	})
	if dockerd.imageErr != nil {
		t.Fatalf("build the test image: %v", dockerd.imageErr)
	}
	return dockerd.image
}

// imageDockerfile builds the test image from the context's rootfs/. The
// healthcheck is frequent so that tests see its verdicts within seconds.
const imageDockerfile = `FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /app
EXPOSE 3000
HEALTHCHECK --interval=1s --timeout=5s --retries=3 CMD ["/clusterinit", "health"]
ENTRYPOINT ["/clusterinit"]
CMD ["--", "node", "http.js"]
`

func buildImage(host, tag, bin string) error {
	node, err := exec.LookPath("node")
	if err != nil {
		return err
	}
	files := map[string]string{"/clusterinit": bin, imageNode: node} // image path → host path
	libs, err := sharedLibraries(node)
	if err != nil {
		return err
	}
	for _, l := range libs {
		files[l] = l
	}
	apps, err := filepath.Glob("testdata/apps/*.js")
	if err != nil || len(apps) == 0 {
		return fmt.Errorf("no apps in testdata/apps (%v)", err)
	}
	for _, a := range apps {
		files["/app/"+filepath.Base(a)] = a
	}

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeContext(pw, files)) }()
	cmd := exec.Command("docker", "build", "--quiet", "--tag", tag, "--label", dockerLabel, "-")
	// The classic builder: it needs no buildx plugin and runs on any daemon.
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+host, "DOCKER_BUILDKIT=0")
	cmd.Stdin = pr
	out, err := cmd.CombinedOutput()
	pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if docker stopped reading
	if err != nil {
		return fmt.Errorf("docker build: %w: %s", err, out)
	}
	return nil
}

// sharedLibraries lists what ldd says exe loads, the dynamic loader
// included, as absolute paths.
func sharedLibraries(exe string) ([]string, error) {
	out, err := exec.Command("ldd", exe).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", exe, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		// "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x…)", or the
		// loader "/lib64/ld-linux-x86-64.so.2 (0x…)", or the vDSO, which
		// has no file.
		f := strings.Fields(line)
		if i := slices.Index(f, "=>"); i >= 0 {
			f = f[i+1:]
		}
		if len(f) == 0 || !strings.HasPrefix(f[0], "/") {
			if strings.Contains(line, "not found") {
				return nil, fmt.Errorf("ldd %s: %s", exe, strings.TrimSpace(line))
			}
			continue
		}
		libs = append(libs, f[0])
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s lists no libraries: %s", exe, out)
	}
	return libs, nil
}

// writeContext writes a docker build context: the Dockerfile, and files
// (image path → host path, symlinks followed) under rootfs/ with every parent
// directory and /tmp.
func writeContext(w io.Writer, files map[string]string) error {
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(imageDockerfile)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, imageDockerfile); err != nil {
		return err
	}
	dirs := map[string]bool{"/tmp": true}
	for dst := range files {
		for d := filepath.Dir(dst); d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Name: "rootfs" + d + "/", Mode: mode, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		if err := addFile(tw, "rootfs"+dst, files[dst]); err != nil {
			return err
		}
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("add %s: %w", src, err)
	}
	return nil
}

// container is a running container of the test image. Its output streams
// into stdout and stderr (clusterinit's JSON log is on stderr) as
// `docker logs -f` delivers it.
type container struct {
	t      *testing.T
	host   string
	id     string
	stdout *syncBuffer
	stderr *syncBuffer
}

// runContainer starts `docker run -d [opts] IMAGE [args]`: opts are docker's
// options, args replace the image's CMD (clusterinit's arguments). The
// container's clusterinit logs JSON and serves health on every address
// (port 9558), so that the host reaches /metrics at the container's IP. It
// is removed when the test ends.
func runContainer(t *testing.T, opts []string, args ...string) *container {
	t.Helper()
	image := testImage(t)
	runArgs := append([]string{"run", "-d", "--label", dockerLabel,
		"-e", "CLUSTERINIT_LOG_FORMAT=json", "-e", "CLUSTERINIT_HEALTH_ADDR=0.0.0.0:9558"}, opts...)
	runArgs = append(append(runArgs, image), args...)
	id, err := dockerCLI(dockerd.host, runArgs...)
	if err != nil {
		t.Fatal(err)
	}
	c := &container{t: t, host: dockerd.host, id: id, stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	logs := exec.Command("docker", "logs", "--follow", id)
	logs.Env = append(os.Environ(), "DOCKER_HOST="+c.host)
	logs.Stdout, logs.Stderr = c.stdout, c.stderr
	if err := logs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			state, _ := c.docker("inspect", "--format", "{{json .State}}", c.id)
			t.Logf("container %.12s: %s", c.id, state)
			t.Logf("container stderr:\n%s", tail(c.stderr.String(), 60))
			t.Logf("container stdout:\n%s", tail(c.stdout.String(), 20))
		}
		if _, err := c.docker("rm", "-f", "-v", c.id); err != nil {
			t.Errorf("remove container: %v", err)
		}
		logs.Wait() // ends with the container
	})
	return c
}

// docker runs the docker CLI against the container's daemon.
func (c *container) docker(args ...string) (string, error) { return dockerCLI(c.host, args...) }

// inspect returns a Go-template field of `docker inspect`.
func (c *container) inspect(format string) string {
	c.t.Helper()
	out, err := c.docker("inspect", "--format", format, c.id)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// ip is the container's address on docker's bridge, which the host reaches
// directly (no docker-proxy in the request path).
func (c *container) ip() string {
	c.t.Helper()
	ip := c.inspect("{{.NetworkSettings.IPAddress}}")
	if ip == "" {
		c.t.Fatalf("container %.12s has no bridge address", c.id)
	}
	return ip
}

// url is the container's app port as seen from the host.
func (c *container) url(path string) string { return "http://" + c.ip() + ":3000" + path }

// health is the base URL of clusterinit's health server in the container.
func (c *container) health() string { return "http://" + c.ip() + ":9558" }

// logs parses clusterinit's JSON log lines.
func (c *container) logs() []map[string]any { return jsonLines(c.stderr.String()) }

// waitLog waits until at least n log lines have msg.
func (c *container) waitLog(msg string, n int, timeout time.Duration) []map[string]any {
	c.t.Helper()
	return waitLines(c.t, c.logs, msg, n, timeout)
}

// wait returns the container's exit status, failing the test after timeout.
func (c *container) wait(timeout time.Duration) int {
	c.t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() { out, err := c.docker("wait", c.id); done <- result{out, err} }()
	select {
	case r := <-done:
		if r.err != nil {
			c.t.Fatal(r.err)
		}
		code, err := strconv.Atoi(r.out)
		if err != nil {
			c.t.Fatalf("docker wait: %q", r.out)
		}
		return code
	case <-time.After(timeout):
		c.t.Fatalf("container did not exit within %v", timeout)
		return 0
	}
}

// hostCgroup is the directory of the container's cgroup on the host in the
// cgroup v1 hierarchy of controller, read from its init's /proc/PID/cgroup.
func (c *container) hostCgroup(controller string) string {
	c.t.Helper()
	pid := c.inspect("{{.State.Pid}}")
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		c.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// "4:memory:/docker/0123…"
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), controller) {
			return filepath.Join("/sys/fs/cgroup", controller, f[2])
		}
	}
	c.t.Fatalf("no %s cgroup in /proc/%s/cgroup: %s", controller, pid, b)
	return ""
}
