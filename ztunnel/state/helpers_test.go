package state

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

const examplePath = "testdata/snapshot.json"

// example returns the parsed testdata/snapshot.json.
func example(tb testing.TB) *Snapshot {
	tb.Helper()
	b, err := os.ReadFile(examplePath)
	if err != nil {
		tb.Fatal(err)
	}
	return mustParse(tb, b)
}

func mustParse(tb testing.TB, b []byte) *Snapshot {
	tb.Helper()
	s, err := Parse(b)
	if err != nil {
		tb.Fatalf("Parse() = %v, want no error; input:\n%s", err, b)
	}
	return s
}

// build encodes s and parses it back, so that snapshots written as Go
// values go through the same decoding and validation as files.
func build(tb testing.TB, s Snapshot) *Snapshot {
	tb.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		tb.Fatal(err)
	}
	return mustParse(tb, b)
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// writeFile replaces path's content in place (same inode).
func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// replaceFile gives path the content b at once, as a new file renamed over
// it: a poller never sees it half written.
func replaceFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	tmp := path + ".tmp"
	writeFile(tb, tmp, b)
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

func tempPath(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), "snapshot.json")
}
