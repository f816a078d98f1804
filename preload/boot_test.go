package preload

import (
	"encoding/base64"
	"testing"
	"time"
)

// BenchmarkBootCPU is the CPU time (user + system, all threads) of one
// `node -e 0` boot: plain, with the preload, and with an ESM import of
// node:http alone (what the preload did before it took its built-ins
// through process.getBuiltinModule: that import runs http.WebSocket's lazy
// getter, which loads undici on Node 22+). A reload's new worker boots on
// CPUs that are already serving, so this is CPU taken from the requests.
//
//	go test -run '^$' -bench BootCPU -benchtime 20x ./preload
func BenchmarkBootCPU(b *testing.B) {
	for _, v := range []struct{ name, nodeOptions string }{
		{"plain", ""},
		{"preload", NodeOptions("", Options{})},
		{"import-node-http", "--import data:text/javascript;base64," + base64.StdEncoding.EncodeToString([]byte(`import "node:http";`))},
	} {
		b.Run(v.name, func(b *testing.B) {
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				cmd := nodeWith(v.nodeOptions, "-e", "0")
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("node -e 0 (%s): %v: %s", v.name, err, out)
				}
				cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
			b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/boot")
		})
	}
}
