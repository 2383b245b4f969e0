package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"sigs.k8s.io/yaml"
)

var testSpec = Spec{
	Name:        "weft-test",
	Description: "test image",
	Binaries:    []string{"tool", "helper"},
	Entrypoint:  "tool",
	User:        NonRoot,
}

// testOptions writes two small files as the "binaries".
func testOptions(t testing.TB) Options {
	t.Helper()
	dir := t.TempDir()
	for n, data := range map[string]string{"tool": "tool bytes", "helper": "helper bytes"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Options{Registry: "ghcr.io/weftmesh", Version: "1.2.3", Revision: "abc123", Created: t0, BinDir: dir}
}

// mustArchive builds s and writes its archive to a file, returning the
// image, its reference and the archive path.
func mustArchive(t testing.TB, s Spec, o Options) (v1.Image, name.Tag, string) {
	t.Helper()
	img, err := Build(s, o)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	ref, err := o.Ref(s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), s.Name+".tar")
	if err := WriteArchiveFile(path, ref, img); err != nil {
		t.Fatalf("WriteArchiveFile: %v", err)
	}
	return img, ref, path
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestBuildIsReproducible(t *testing.T) {
	o := testOptions(t)
	img1, _, path1 := mustArchive(t, testSpec, o)
	img2, _, path2 := mustArchive(t, testSpec, o)
	d1, _ := img1.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("two builds of the same inputs: digests %s and %s", d1, d2)
	}
	if a, b := fileSHA(t, path1), fileSHA(t, path2); a != b {
		t.Errorf("two archives of the same image differ: sha256 %s and %s", a, b)
	}

	// Every input that should matter does.
	for what, change := range map[string]func(*Options){
		"version":  func(o *Options) { o.Version = "1.2.4" },
		"revision": func(o *Options) { o.Revision = "def456" },
		"created":  func(o *Options) { o.Created = t0.Add(time.Second) },
		"binary": func(o *Options) {
			if err := os.WriteFile(filepath.Join(o.BinDir, "helper"), []byte("other"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	} {
		o2 := testOptions(t)
		change(&o2)
		img, err := Build(testSpec, o2)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := img.Digest(); d == d1 {
			t.Errorf("another %s gave the same digest %s", what, d)
		}
	}
}

func TestBuildConfig(t *testing.T) {
	o := testOptions(t)
	img, err := Build(testSpec, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate.Image: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(t0) {
		t.Errorf("config os/arch/created = %s/%s/%v, want linux/amd64/%v", cf.OS, cf.Architecture, cf.Created.Time, t0)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/tool"}) || c.User != "65532:65532" || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q user %q, want [/usr/local/bin/tool] [] 65532:65532", c.Entrypoint, c.Cmd, c.User)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":       "weft-test",
		"org.opencontainers.image.description": "test image",
		"org.opencontainers.image.version":     "1.2.3",
		"org.opencontainers.image.revision":    "abc123",
		"org.opencontainers.image.source":      "https://github.com/weftmesh/weft",
		"org.opencontainers.image.url":         "https://github.com/weftmesh/weft",
		"org.opencontainers.image.created":     "2023-11-14T22:13:20Z",
	}
	for k, v := range wantLabels {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	for _, h := range cf.History {
		if !h.Created.Time.Equal(t0) {
			t.Errorf("history %q created %v, want %v", h.CreatedBy, h.Created.Time, t0)
		}
	}
	mt, _ := img.MediaType()
	m, _ := img.Manifest()
	if mt != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("media types manifest %s config %s, want OCI", mt, m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer %s media type %s, want %s", l.Digest, l.MediaType, types.OCILayer)
		}
	}

	// The flattened file system: the base and the binaries.
	files := map[string]*tar.Header{}
	contents := map[string]string{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		b, _ := io.ReadAll(tr)
		contents[h.Name] = string(b)
	}
	for p, want := range map[string]string{"usr/local/bin/tool": "tool bytes", "usr/local/bin/helper": "helper bytes"} {
		if contents[p] != want || files[p] == nil || files[p].Mode != 0o755 {
			t.Errorf("%s: content %q mode %v, want %q 0755", p, contents[p], files[p], want)
		}
	}
	if !strings.Contains(contents["etc/passwd"], "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd = %q, want the nonroot user", contents["etc/passwd"])
	}
	if h := files["tmp"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("/tmp = %+v, want a 1777 directory", h)
	}
}

func TestBuildRejects(t *testing.T) {
	o := testOptions(t)
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{name: "entrypoint not a binary", spec: Spec{Name: "x", Binaries: []string{"tool"}, Entrypoint: "other", User: Root}, want: "not one of its binaries"},
		{name: "named user", spec: Spec{Name: "x", Binaries: []string{"tool"}, Entrypoint: "tool", User: "nobody"}, want: `user "nobody"`},
		{name: "missing binary", spec: Spec{Name: "x", Binaries: []string{"nope"}, Entrypoint: "nope", User: Root}, want: "read binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Build(tt.spec, o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build(%+v) = %v, want an error with %q", tt.spec, err, tt.want)
			}
		})
	}
}

func TestArchiveReadsBack(t *testing.T) {
	img, ref, path := mustArchive(t, testSpec, testOptions(t))
	want, _ := img.Digest()

	// The archive's own entries: sorted, fixed owner, time and modes.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.ModTime.Unix() != 0 || h.Uid != 0 || h.Gid != 0 || (h.Mode != 0o644 && h.Mode != 0o755) {
			t.Errorf("archive entry %s: mtime %v uid %d gid %d mode %o", h.Name, h.ModTime, h.Uid, h.Gid, h.Mode)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("archive entries not sorted: %q", names)
	}
	for _, n := range []string{"oci-layout", "index.json", "manifest.json", "blobs/sha256/" + want.Hex} {
		if !slices.Contains(names, n) {
			t.Errorf("archive lacks %s: %q", n, names)
		}
	}

	// As a docker-save tarball (docker load, skopeo docker-archive:).
	tag, _ := name.NewTag(ref.String())
	dimg, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("tarball.ImageFromPath: %v", err)
	}
	if err := validate.Image(dimg); err != nil {
		t.Errorf("validate.Image(docker-save view): %v", err)
	}
	dl, _ := dimg.Layers()
	ol, _ := img.Layers()
	if len(dl) != len(ol) {
		t.Fatalf("docker-save view has %d layers, want %d", len(dl), len(ol))
	}
	for i := range dl {
		a, _ := dl[i].Digest()
		b, _ := ol[i].Digest()
		if a != b {
			t.Errorf("docker-save view layer %d: %s, want %s", i, a, b)
		}
	}

	// As an OCI image layout (skopeo oci-archive:, podman load, docker load ≥ 25).
	dir := t.TempDir()
	untar(t, path, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("layout.ImageIndexFromPath: %v", err)
	}
	if err := validate.Index(idx); err != nil {
		t.Errorf("validate.Index(OCI layout view): %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.Digest != want || d.MediaType != types.OCIManifestSchema1 {
		t.Errorf("index.json manifest %s %s, want %s %s", d.Digest, d.MediaType, want, types.OCIManifestSchema1)
	}
	for _, k := range []string{AnnotationRefName, AnnotationContainerName} {
		if d.Annotations[k] != "ghcr.io/weftmesh/weft-test:1.2.3" {
			t.Errorf("index.json annotation %s = %q, want ghcr.io/weftmesh/weft-test:1.2.3", k, d.Annotations[k])
		}
	}
	limg, err := idx.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(limg); err != nil {
		t.Errorf("validate.Image(OCI layout view): %v", err)
	}

	var dm []dockerManifest
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dm); err != nil || len(dm) != 1 || !slices.Equal(dm[0].RepoTags, []string{"ghcr.io/weftmesh/weft-test:1.2.3"}) {
		t.Errorf("manifest.json = %s (%v), want one image tagged ghcr.io/weftmesh/weft-test:1.2.3", raw, err)
	}
}

// untar extracts the regular files and directories of the tar at path.
func untar(t testing.TB, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var b bytes.Buffer
		if _, err := io.Copy(&b, tr); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWeftImagesMatchChart checks that every image the chart references is
// one `make images` builds, under the registry and tag the chart defaults to,
// and who runs as root.
func TestWeftImagesMatchChart(t *testing.T) {
	chart := filepath.Join("..", "helm", "weft")
	byName := map[string]Spec{}
	for _, s := range Weft {
		if err := s.check(); err != nil {
			t.Errorf("spec %s: %v", s.Name, err)
		}
		byName[s.Name] = s
	}
	templates, err := filepath.Glob(filepath.Join(chart, "templates", "*.yaml"))
	if err != nil || len(templates) == 0 {
		t.Fatalf("chart templates: %v %v", templates, err)
	}
	used := regexp.MustCompile(`include "weft.image" \(dict [^)]*"name" "([^"]+)"`)
	var referenced []string
	for _, p := range templates {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range used.FindAllStringSubmatch(string(b), -1) {
			referenced = append(referenced, m[1])
			if _, ok := byName[m[1]]; !ok {
				t.Errorf("%s uses image %s, which make images does not build", p, m[1])
			}
		}
	}
	if len(referenced) == 0 {
		t.Errorf("no weft.image use found in the chart templates: is the pattern stale?")
	}

	raw, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Image struct{ Registry, Tag string } `json:"image"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	if values.Image.Registry != DefaultRegistry {
		t.Errorf("values.yaml image.registry %q, DefaultRegistry %q", values.Image.Registry, DefaultRegistry)
	}
	version, err := ChartAppVersion(chart)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(version) {
		t.Errorf("ChartAppVersion = %q, want a semantic version", version)
	}

	for n, user := range map[string]string{"weft-operator": NonRoot, "weft": NonRoot, "weft-agent": Root, "weft-ztunnel": Root, "weft-cni": Root} {
		if byName[n].User != user {
			t.Errorf("image %s runs as %q, want %q", n, byName[n].User, user)
		}
	}
}
