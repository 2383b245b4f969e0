package image

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BinDir is where an image's binaries are installed.
const BinDir = "/usr/local/bin"

// Users of an image's processes.
const (
	// Root is for the node components that need root and capabilities.
	Root = "0:0"
	// NonRoot is distroless' "nonroot" user, for everything else.
	NonRoot = "65532:65532"
)

// Spec describes one image. Specs and Options are plain values.
type Spec struct {
	// Name is the repository name under the registry, e.g. weft-agent.
	Name string
	// Description becomes the org.opencontainers.image.description label.
	Description string
	// Binaries are installed, 0755, in BinDir, from the options' binary
	// directory (file names as go build names them).
	Binaries []string
	// Entrypoint is the binary (in Binaries) the image runs; the command
	// line is /usr/local/bin/<Entrypoint>.
	Entrypoint string
	// User is "uid:gid": Root or NonRoot.
	User string
}

// Options are what all images of one build share.
type Options struct {
	// Registry is the image name prefix, e.g. ghcr.io/weftmesh.
	Registry string
	// Version is the image tag and the org.opencontainers.image.version label.
	Version string
	// Revision, when set, is the org.opencontainers.image.revision label.
	Revision string
	// Created is every timestamp in the image: file times, history and the
	// config's created time (from SOURCE_DATE_EPOCH; the Unix epoch if zero).
	Created time.Time
	// BinDir holds the static binaries the specs name.
	BinDir string
}

// DefaultRegistry is the chart's default image.registry.
const DefaultRegistry = "ghcr.io/weftmesh"

// Source is the org.opencontainers.image.source label of every image.
const Source = "https://github.com/weftmesh/weft"

// Ref returns the image's reference, <registry>/<name>:<version>.
func (o Options) Ref(s Spec) (name.Tag, error) {
	ref, err := name.NewTag(o.Registry + "/" + s.Name + ":" + o.Version)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image %s: reference: %w", s.Name, err)
	}
	return ref, nil
}

// Build returns the image of s: a base layer shared by every image (passwd
// and group with root and nonroot, /tmp, the nonroot home) and one layer with
// the binaries.
func Build(s Spec, o Options) (v1.Image, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	created := o.created()
	base, err := BaseLayer(created)
	if err != nil {
		return nil, fmt.Errorf("image %s: base layer: %w", s.Name, err)
	}
	entries := make([]Entry, 0, len(s.Binaries))
	for _, b := range s.Binaries {
		data, err := os.ReadFile(filepath.Join(o.BinDir, b))
		if err != nil {
			return nil, fmt.Errorf("image %s: read binary: %w", s.Name, err)
		}
		entries = append(entries, Entry{Path: path.Join(BinDir, b), Mode: 0o755, Data: data})
	}
	bins, err := Layer(entries, created)
	if err != nil {
		return nil, fmt.Errorf("image %s: binaries layer: %w", s.Name, err)
	}

	labels := map[string]string{
		"org.opencontainers.image.title":       s.Name,
		"org.opencontainers.image.description": s.Description,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.url":         Source,
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	if o.Revision != "" {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			Entrypoint: []string{path.Join(BinDir, s.Entrypoint)},
			User:       s.User,
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			WorkingDir: "/",
			Labels:     labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", s.Name, err)
	}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "weft imagebuild: base (passwd, group, /tmp)",
		}},
		mutate.Addendum{Layer: bins, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "weft imagebuild: " + strings.Join(s.Binaries, ", ") + " into " + BinDir,
		}},
	)
	if err != nil {
		return nil, fmt.Errorf("image %s: add layers: %w", s.Name, err)
	}
	return img, nil
}

// BaseLayer is the first layer of every image: just enough of a root
// filesystem for a static binary run as root or as nonroot (65532).
func BaseLayer(created time.Time) (v1.Layer, error) {
	return Layer([]Entry{
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{Path: "/home/nonroot", Dir: true, Mode: 0o700, UID: 65532, GID: 65532},
		{Path: "/root", Dir: true, Mode: 0o700},
		{Path: "/tmp", Dir: true, Mode: 0o777 | os.ModeSticky},
	}, created)
}

func (o Options) created() time.Time {
	if o.Created.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return o.Created.UTC().Truncate(time.Second)
}

func (s Spec) check() error {
	if s.Name == "" {
		return fmt.Errorf("image spec without a name")
	}
	if s.User != Root && s.User != NonRoot {
		return fmt.Errorf("image %s: user %q: want %q or %q", s.Name, s.User, Root, NonRoot)
	}
	for _, b := range s.Binaries {
		if b == s.Entrypoint {
			return nil
		}
	}
	return fmt.Errorf("image %s: entrypoint %q is not one of its binaries %v", s.Name, s.Entrypoint, s.Binaries)
}

// CompressedSize is what pushing img transfers: its manifest, config and
// compressed layers.
func CompressedSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, fmt.Errorf("image size: %w", err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, fmt.Errorf("image size: %w", err)
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}
