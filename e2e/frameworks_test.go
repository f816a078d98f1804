package e2e

// End-to-end tests on the frameworks people deploy: Fastify 5, Koa, hapi,
// NestJS and SvelteKit, installed from npm with locked versions, built and
// run the way each one's docs say to run in production (testdata/<name>,
// built by testdata/setup-node-apps.sh), unmodified, on Node 26 and on 22.
// Each app appends "<pid> <hook>" to $SHUTDOWN_LOG when its own shutdown
// hook runs: that is where an app closes its pools, so a drain that skips it
// loses data although the worker exits 0 on time.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// framework is one real app under test.
type framework struct {
	name  string
	argv  []string // the worker command, from the module root
	entry string   // the file its install or build writes
	hook  string   // what its shutdown hook writes after the pid
	// listening, when set, is what each worker prints once listening.
	listening string
}

var frameworks = []framework{
	{"fastify", []string{"node", "testdata/fastify/server.js"}, "testdata/fastify/node_modules/fastify/package.json", "onClose", ""},
	{"koa", []string{"node", "testdata/koa/server.js"}, "testdata/koa/node_modules/koa/package.json", "server.close", ""},
	{"hapi", []string{"node", "testdata/hapi/server.js"}, "testdata/hapi/node_modules/@hapi/hapi/package.json", "onPostStop", ""},
	// nest build's default compiler is tsc: npm run build, then
	// node dist/main.js as Nest's docs say.
	{"nestjs", []string{"node", "testdata/nestjs/dist/main.js"}, "testdata/nestjs/dist/main.js", "onApplicationShutdown", ""},
	// adapter-node's docs: vite build, then node build.
	// adapter-node's own socket activation (LISTEN_PID, LISTEN_FDS) is
	// not what serves: the preload takes those variables, and the
	// listen({host, port}) it falls back to is redirected to the handed
	// socket ("Listening on file descriptor 3" would be the other route).
	{"sveltekit", []string{"node", "testdata/sveltekit/build"}, "testdata/sveltekit/build/index.js", "sveltekit:shutdown", "Listening on http://"},
}

// frameworkLines are the Node lines the framework tests run on: the Active
// LTS and the oldest maintained line.
var frameworkLines = []string{"26", "22"}

// frameworkEntries lists the files setup-node-apps.sh must have written.
func frameworkEntries(t *testing.T) []string {
	var out []string
	for _, fw := range frameworks {
		out = append(out, repoFile(t, fw.entry))
	}
	return out
}

// nodeLine returns the bin directory of the official node of a line, fetched
// from npm by testdata/fetch-node.sh (cached; NODE_CACHE shares the cache).
func nodeLine(t *testing.T, major string, arch ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command("bash", append([]string{"testdata/fetch-node.sh", major}, arch...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
	}
	need(t, fmt.Sprintf("node %s %v from npm (testdata/fetch-node.sh)", major, arch), err)
	return strings.TrimSpace(out.String())
}

// TestFrameworkStartStop: two workers ready and both answering, on the node
// asked for, and SIGTERM: exit 0, every worker exiting by itself after
// running the app's hook.
func TestFrameworkStartStop(t *testing.T) {
	needLong(t)
	for _, line := range frameworkLines {
		bin := nodeLine(t, line)
		for _, fw := range frameworks {
			t.Run(fw.name+"/node"+line, func(t *testing.T) {
				p, _, pids, hooks := startFramework(t, fw, bin)
				stopAppCleanly(t, p)
				ran := hooksRan(t, hooks, fw.hook, pids)
				t.Logf("%s on node %s: hook %q ran in %d/%d stopped workers", fw.name, filepath.Base(filepath.Dir(bin)), fw.hook, ran, len(pids))
			})
		}
	}
}

// startFramework runs two workers of fw on the node in bin and waits until
// both answer. It returns the file the app's hooks write to.
func startFramework(t *testing.T, fw framework, bin string) (p *proc, url string, pids map[int]string, hooks string) {
	t.Helper()
	hooks = filepath.Join(t.TempDir(), "shutdown.log")
	p, url, pids = realAppFleetArgv(t, fw.argv,
		"PATH="+bin+":"+os.Getenv("PATH"),
		"SHUTDOWN_LOG="+hooks,
		// Bounded below the test's own waits: a worker that hangs shows
		// as killed, not as a test timeout.
		"CLUSTERINIT_DRAIN_TIMEOUT=15s")
	for pid := range pids {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != filepath.Join(bin, "node") {
			t.Fatalf("worker %d runs %q (%v), want %s/node", pid, exe, err, bin)
		}
	}
	everyAppWorkerAnswers(t, url+"/", pids)
	if fw.listening != "" && strings.Count(p.stdout.String(), fw.listening) != len(pids) {
		t.Errorf("want %q from each worker in its output:\n%s", fw.listening, p.stdout.String())
	}
	return p, url, pids, hooks
}

// waitExits waits until every worker in pids has exited, and wants each to
// have exited by itself (not killed at DRAIN_TIMEOUT, not unclean).
func waitExits(t *testing.T, p *proc, pids map[int]string) {
	t.Helper()
	exits := map[int]map[string]any{}
	waitFor(t, 30*time.Second, fmt.Sprintf("workers %v to exit", pids), func() bool {
		for _, l := range p.logs() {
			msg, _ := l["msg"].(string)
			if pid := num(l, "pid"); pids[pid] != "" && (strings.HasPrefix(msg, "worker exited") || strings.HasPrefix(msg, "worker killed")) {
				exits[pid] = l
			}
		}
		return len(exits) == len(pids)
	})
	for _, l := range exits {
		if l["msg"] != "worker exited" || l["reason"] != "stopped" {
			t.Errorf("drained worker did not exit cleanly: %v", l)
		}
	}
}
