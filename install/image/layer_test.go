package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1700000000, 0).UTC()

func TestLayerIsDeterministic(t *testing.T) {
	entries := []Entry{
		{Path: "/usr/local/bin/b", Mode: 0o755, Data: []byte("bee")},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0::/:/x\n")},
		{Path: "/tmp", Dir: true, Mode: 0o777 | fs.ModeSticky},
		{Path: "/usr/local/bin/a", Mode: 0o755, Data: []byte("ay")},
	}
	reversed := make([]Entry, len(entries))
	for i, e := range entries {
		reversed[len(entries)-1-i] = e
	}
	digest := func(es []Entry, mtime time.Time) string {
		t.Helper()
		l, err := Layer(es, mtime)
		if err != nil {
			t.Fatalf("Layer: %v", err)
		}
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	first := digest(entries, t0)
	if got := digest(entries, t0); got != first {
		t.Errorf("same entries twice: digest %s, then %s", first, got)
	}
	if got := digest(reversed, t0); got != first {
		t.Errorf("entries in reverse order: digest %s, want %s", got, first)
	}
	if got := digest(entries, t0.Add(500*time.Millisecond)); got != first {
		t.Errorf("mtime with sub-second part: digest %s, want %s (seconds only)", got, first)
	}
	if got := digest(entries, t0.Add(time.Second)); got == first {
		t.Errorf("another mtime gave the same digest %s", got)
	}
	changed := append([]Entry(nil), entries...)
	changed[0].Mode = 0o700
	if got := digest(changed, t0); got == first {
		t.Errorf("another mode gave the same digest %s", got)
	}
}

func TestLayerTarHeaders(t *testing.T) {
	raw, err := layerTar([]Entry{
		{Path: "/usr/local/bin/weft", Mode: 0o755, Data: []byte("#!weft")},
		{Path: "/home/nonroot", Dir: true, Mode: 0o700, UID: 65532, GID: 65532},
		{Path: "/tmp/", Dir: true, Mode: 0o777 | fs.ModeSticky},
		{Path: "/etc/group", Data: []byte("root:x:0:\n")},
	}, t0.Add(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"etc/ dir 0755 0:0",
		"etc/group file 0644 0:0 10",
		"home/ dir 0755 0:0",
		"home/nonroot/ dir 0700 65532:65532",
		"tmp/ dir 1777 0:0",
		"usr/ dir 0755 0:0",
		"usr/local/ dir 0755 0:0",
		"usr/local/bin/ dir 0755 0:0",
		"usr/local/bin/weft file 0755 0:0 6",
	}
	var got []string
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kind, size := "file", fmt.Sprintf(" %d", h.Size)
		if h.Typeflag == tar.TypeDir {
			kind, size = "dir", ""
		}
		got = append(got, fmt.Sprintf("%s %s %04o %d:%d%s", h.Name, kind, h.Mode, h.Uid, h.Gid, size))
		if !h.ModTime.Equal(t0) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, t0)
		}
		if h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: uname %q gname %q atime %v ctime %v, want none", h.Name, h.Uname, h.Gname, h.AccessTime, h.ChangeTime)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLayerRejects(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    string
	}{
		{name: "relative path", entries: []Entry{{Path: "etc/passwd"}}, want: "must be absolute"},
		{name: "root", entries: []Entry{{Path: "/", Dir: true}}, want: "root directory is implicit"},
		{name: "file twice", entries: []Entry{{Path: "/a"}, {Path: "/a/"}}, want: "given twice"},
		{name: "directory with data", entries: []Entry{{Path: "/d", Dir: true, Data: []byte("x")}}, want: "directory with data"},
		{name: "file as parent", entries: []Entry{{Path: "/a"}, {Path: "/a/b"}}, want: "parent /a is a file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := layerTar(tt.entries, t0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("layerTar(%v) = %v, want an error with %q", tt.entries, err, tt.want)
			}
		})
	}
}
