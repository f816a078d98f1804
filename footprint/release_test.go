package footprint

import (
	"os"
	"testing"
)

// Release, run on the test binary itself, advises its read-only mappings and
// leaves fewer of its file pages resident.
func TestReleaseDropsTheExecutablesPages(t *testing.T) {
	r, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if r.Mappings < 1 {
		t.Fatalf("%d mappings advised, want at least the text", r.Mappings)
	}
	if r.FileRSSBefore <= 0 || r.FileRSSAfter >= r.FileRSSBefore {
		t.Fatalf("RssFile %d -> %d bytes: want it to fall", r.FileRSSBefore, r.FileRSSAfter)
	}
	// What runs afterwards faults its pages back in: nothing breaks.
	if _, err := os.ReadFile("/proc/self/status"); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnlyMappings(t *testing.T) {
	maps := []byte(`00400000-0076f000 r-xp 00000000 08:01 123 /usr/bin/clusterinit
0076f000-00b1a000 r--p 0036f000 08:01 123 /usr/bin/clusterinit
00b1a000-00b77000 rw-p 0071a000 08:01 123 /usr/bin/clusterinit
00b77000-00bb0000 rw-p 00000000 00:00 0
c000000000-c000400000 rw-p 00000000 00:00 0
7f0000000000-7f0000001000 r--p 00000000 08:01 124 /usr/bin/clusterinit-other
7f0000002000-7f0000003000 r-xp 00000000 08:01 125 /opt/my app/clusterinit
`)
	got, err := readOnlyMappings(maps, "/usr/bin/clusterinit")
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{{0x400000, 0x76f000}, {0x76f000, 0xb1a000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %x, want %x", got, want)
	}
	got, err = readOnlyMappings(maps, "/opt/my app/clusterinit")
	if err != nil || len(got) != 1 || got[0] != (mapping{0x7f0000002000, 0x7f0000003000}) {
		t.Fatalf("a path with a space: got %x, %v", got, err)
	}
	if _, err := readOnlyMappings([]byte("zz-yy r-xp 0 0:0 1 /x\n"), "/x"); err == nil {
		t.Fatal("a bad range was accepted")
	}
}

// The parser never panics and returns only ranges it read in order.
func FuzzReadOnlyMappings(f *testing.F) {
	f.Add([]byte("00400000-0076f000 r-xp 00000000 08:01 123 /x\n"), "/x")
	f.Add([]byte("0-1 r 0 0 0 /x\n-\n \n"), "/x")
	f.Fuzz(func(t *testing.T, maps []byte, path string) {
		got, err := readOnlyMappings(maps, path)
		if err != nil {
			return
		}
		for _, m := range got {
			if m.hi <= m.lo {
				t.Fatalf("range %x-%x", m.lo, m.hi)
			}
		}
	})
}
