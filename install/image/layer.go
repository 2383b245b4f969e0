package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one file or directory of a layer.
type Entry struct {
	// Path is the absolute path inside the image, e.g. /usr/local/bin/weft.
	Path string
	// Dir makes the entry a directory; Data must then be empty.
	Dir bool
	// Mode holds the permission bits (and fs.ModeSticky). Zero means 0644
	// for files and 0755 for directories.
	Mode fs.FileMode
	// UID and GID own the entry; zero is root.
	UID, GID int
	// Data is a file's content.
	Data []byte
}

// Layer returns a gzip-compressed OCI layer holding entries. Missing parent
// directories are added (0755, root). Entries are written sorted by path,
// each with modTime (truncated to the second) and no user or group names,
// so the same entries give the same layer digest in any input order.
func Layer(entries []Entry, modTime time.Time) (v1.Layer, error) {
	raw, err := layerTar(entries, modTime)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	return newStaticLayer(raw, gz.Bytes())
}

// staticLayer is a layer held in memory, compressed once. (tarball's layers
// describe themselves with an empty, non-nil annotations map, which
// validate.Image reports as a manifest mismatch.)
type staticLayer struct {
	compressed     []byte
	digest, diffID v1.Hash
}

func newStaticLayer(raw, compressed []byte) (v1.Layer, error) {
	digest, _, err := v1.SHA256(bytes.NewReader(compressed))
	if err != nil {
		return nil, fmt.Errorf("layer digest: %w", err)
	}
	diffID, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("layer diff ID: %w", err)
	}
	return &staticLayer{compressed: compressed, digest: digest, diffID: diffID}, nil
}

func (l *staticLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *staticLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *staticLayer) Size() (int64, error)     { return int64(len(l.compressed)), nil }
func (l *staticLayer) MediaType() (types.MediaType, error) {
	return types.OCILayer, nil
}
func (l *staticLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *staticLayer) Uncompressed() (io.ReadCloser, error) {
	zr, err := gzip.NewReader(bytes.NewReader(l.compressed))
	if err != nil {
		return nil, fmt.Errorf("decompress layer: %w", err)
	}
	return zr, nil
}

// layerTar returns the uncompressed tar stream of a layer.
func layerTar(entries []Entry, modTime time.Time) ([]byte, error) {
	byName := make(map[string]Entry, len(entries))
	for _, e := range entries {
		name, err := tarName(e.Path)
		if err != nil {
			return nil, err
		}
		if e.Dir && len(e.Data) > 0 {
			return nil, fmt.Errorf("layer entry %s: a directory with data", e.Path)
		}
		if old, ok := byName[name]; ok && !(old.Dir && e.Dir) {
			return nil, fmt.Errorf("layer entry %s: given twice", e.Path)
		}
		byName[name] = e
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if _, ok := byName[dir]; !ok {
				byName[dir] = Entry{Path: "/" + dir, Dir: true}
			} else if !byName[dir].Dir {
				return nil, fmt.Errorf("layer entry %s: parent %s is a file", e.Path, "/"+dir)
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)

	mtime := modTime.UTC().Truncate(time.Second)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := byName[n]
		hdr := &tar.Header{
			Name:    n,
			Mode:    tarMode(e),
			Uid:     e.UID,
			Gid:     e.GID,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.Dir {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.Path, err)
		}
		if _, err := tw.Write(e.Data); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

// tarName turns an absolute image path into a clean tar entry name.
func tarName(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("layer entry %q: path must be absolute", p)
	}
	name := strings.TrimPrefix(path.Clean(p), "/")
	if name == "" {
		return "", fmt.Errorf("layer entry %q: the root directory is implicit", p)
	}
	return name, nil
}

// tarMode returns the tar header mode: permission, setuid/setgid and sticky
// bits only, with the defaults for a zero Mode.
func tarMode(e Entry) int64 {
	perm := e.Mode.Perm()
	if e.Mode == 0 {
		perm = 0o644
		if e.Dir {
			perm = 0o755
		}
	}
	m := int64(perm)
	if e.Mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	if e.Mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if e.Mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	return m
}
