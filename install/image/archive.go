package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on the image's descriptor in the archive's index.json that name
// the image when it is loaded: the OCI one (skopeo, podman) and containerd's
// (docker ≥ 25 with the containerd image store).
const (
	AnnotationRefName       = "org.opencontainers.image.ref.name"
	AnnotationContainerName = "io.containerd.image.name"
)

// WriteArchive writes img, named ref, as one tar archive to w. The archive is
// an OCI image layout (oci-layout, index.json, blobs/sha256/…) that also holds
// a docker-save manifest.json pointing at the same blobs, as `docker save`
// itself writes since docker 25: skopeo (oci-archive: and docker-archive:),
// podman load and docker load all read it. Entries are sorted and carry
// mtime, uid and gid 0 and mode 0644 (0755 for directories), so the archive's
// bytes depend only on the image and ref.
func WriteArchive(w io.Writer, ref name.Tag, img v1.Image) error {
	blobs := map[string][]byte{} // path → content; layers are streamed below
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("archive %s: layers: %w", ref, err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("archive %s: config: %w", ref, err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("archive %s: config digest: %w", ref, err)
	}
	blobs[blobPath(cfgName)] = rawCfg
	rawManifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("archive %s: manifest: %w", ref, err)
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return fmt.Errorf("archive %s: manifest descriptor: %w", ref, err)
	}
	blobs[blobPath(desc.Digest)] = rawManifest

	layerPaths := make([]string, 0, len(layers))
	layerByPath := map[string]v1.Layer{}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("archive %s: layer digest: %w", ref, err)
		}
		layerPaths = append(layerPaths, blobPath(d))
		layerByPath[blobPath(d)] = l
	}

	desc.Annotations = map[string]string{
		AnnotationRefName:       ref.String(),
		AnnotationContainerName: ref.String(),
	}
	index, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     []v1.Descriptor{*desc},
	})
	if err != nil {
		return fmt.Errorf("archive %s: index: %w", ref, err)
	}
	docker, err := json.Marshal([]dockerManifest{{
		Config:   blobPath(cfgName),
		RepoTags: []string{ref.String()},
		Layers:   layerPaths,
	}})
	if err != nil {
		return fmt.Errorf("archive %s: manifest.json: %w", ref, err)
	}
	small := map[string][]byte{
		"oci-layout":    []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json":    index,
		"manifest.json": docker,
	}
	for p, b := range blobs {
		small[p] = b
	}

	paths := append([]string{"blobs/", "blobs/sha256/"}, slices.Collect(maps.Keys(small))...)
	for p := range layerByPath {
		if _, dup := small[p]; !dup {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)

	tw := tar.NewWriter(w)
	for _, p := range paths {
		hdr := &tar.Header{Name: p, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		var body io.ReadCloser
		switch {
		case p[len(p)-1] == '/':
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		case small[p] != nil:
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(small[p]))
			body = io.NopCloser(bytes.NewReader(small[p]))
		default:
			l := layerByPath[p]
			size, err := l.Size()
			if err != nil {
				return fmt.Errorf("archive %s: layer size: %w", ref, err)
			}
			if body, err = l.Compressed(); err != nil {
				return fmt.Errorf("archive %s: layer %s: %w", ref, p, err)
			}
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, size
		}
		if err := writeEntry(tw, hdr, body); err != nil {
			return fmt.Errorf("archive %s: %s: %w", ref, p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", ref, err)
	}
	return nil
}

// WriteArchiveFile writes the archive of img to path, replacing any old file
// only once the new one is complete.
func WriteArchiveFile(path string, ref name.Tag, img v1.Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("archive %s: %w", ref, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := WriteArchive(tmp, ref, img); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("archive %s: %w", ref, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", ref, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("archive %s: %w", ref, err)
	}
	return nil
}

// dockerManifest is one entry of a docker-save manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// writeEntry writes one tar entry and closes its body (nil for directories).
func writeEntry(tw *tar.Writer, hdr *tar.Header, body io.ReadCloser) error {
	if body == nil {
		return tw.WriteHeader(hdr)
	}
	defer body.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, body)
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("wrote %d bytes, want %d", n, hdr.Size)
	}
	return nil
}
