package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestRealImage builds weft-ztunnel (the image binary with the fewest
// dependencies) as `make images` does, twice, and checks that both builds
// give the same image digest, that the archive reads back as a valid image,
// and that the binary inside it is a static linux/amd64 executable with the
// fixed flags that runs.
func TestRealImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const version = "0.0.0-imagetest"
	var spec Spec
	for _, s := range Weft {
		if s.Name == "weft-ztunnel" {
			spec = s
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}

	var digests []string
	var img1Path string
	for i := range 2 {
		bin := t.TempDir()
		start := time.Now()
		if err := GoBuild(ctx, root, bin, version, Packages([]Spec{spec})...); err != nil {
			t.Fatalf("GoBuild: %v", err)
		}
		t.Logf("go build %d: %.1fs", i+1, time.Since(start).Seconds())
		o := Options{Registry: DefaultRegistry, Version: version, Created: time.Unix(0, 0), BinDir: bin}
		_, ref, path := mustArchive(t, spec, o)
		if ref.String() != "ghcr.io/weftmesh/weft-ztunnel:"+version {
			t.Errorf("ref = %s, want ghcr.io/weftmesh/weft-ztunnel:%s", ref, version)
		}
		digests = append(digests, fileSHA(t, path))
		img1Path = path
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds from the same tree: archive sha256 %s and %s", digests[0], digests[1])
	}

	tag, _ := name.NewTag("ghcr.io/weftmesh/weft-ztunnel:" + version)
	img, err := tarball.ImageFromPath(img1Path, &tag)
	if err != nil {
		t.Fatalf("read the archive back: %v", err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate.Image: %v", err)
	}
	st, _ := os.Stat(img1Path)
	size, _ := CompressedSize(img)
	t.Logf("weft-ztunnel image: archive %d bytes, compressed %d bytes", st.Size(), size)

	// Take the binary out of the image's file system and run it.
	exe := filepath.Join(t.TempDir(), "weft-ztunnel")
	tr := tar.NewReader(mutate.Extract(img))
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "usr/local/bin/weft-ztunnel" {
			continue
		}
		found = true
		if h.Mode != 0o755 || h.Uid != 0 {
			t.Errorf("%s: mode %o uid %d, want 755 root", h.Name, h.Mode, h.Uid)
		}
		f, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatal("image has no /usr/local/bin/weft-ztunnel")
	}

	ef, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary has a program interpreter: it is dynamically linked")
		}
	}
	if libs, _ := ef.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v", libs)
	}
	if ef.Machine != elf.EM_X86_64 {
		t.Errorf("binary machine %v, want x86-64", ef.Machine)
	}

	bi, err := buildinfo.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "GOAMD64": "v1", "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], want)
		}
	}
	// No Go build ID (a hash of the build's inputs and cache keys): the
	// linker writes no .note.go.buildid for -ldflags=-buildid=. (With
	// -trimpath, go does not record -ldflags in the build info.)
	if note := ef.Section(".note.go.buildid"); note != nil {
		data, _ := note.Data()
		if len(data) < 16 || len(bytes.TrimRight(data[16:], "\x00")) != 0 {
			t.Errorf("binary has a Go build ID note %q, want none (-buildid=)", data)
		}
	}
	if _, ok := settings["vcs.revision"]; ok {
		t.Errorf("binary carries a VCS stamp: %v", settings)
	}
	if data, err := os.ReadFile(exe); err != nil || bytes.Contains(data, []byte(root+"/")) {
		t.Errorf("binary holds the build directory %s (err %v): -trimpath did not apply", root, err)
	}

	out, err := exec.CommandContext(ctx, exe, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("weft-ztunnel --help from the image: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "weft-ztunnel") || !strings.Contains(string(out), "--operator-addr") {
		t.Errorf("weft-ztunnel --help from the image printed:\n%s\nwant its usage", out)
	}
}
