// Package image builds weft's container images without a container daemon:
// static Go binaries become image layers, the layers and an OCI image config
// become an image (with github.com/google/go-containerregistry), and the
// image is written as one tar archive that is at once an OCI image layout
// (skopeo copy oci-archive:, podman load, docker load ≥ 25) and a
// `docker save` tarball (manifest.json, for older docker load).
//
// Everything is reproducible: the same binaries, version and creation time
// give the same bytes and so the same digest. Tar entries are sorted, carry
// one fixed timestamp, uid/gid 0 (or the given owner) and fixed modes, and
// gzip output is fixed for a given Go toolchain.
//
// The functions are safe for concurrent use (`make images` builds one image
// per CPU); images and layers are immutable once built. Images are
// linux/amd64 only. The package must not import any weft component: it
// packages binaries, it does not know what they do.
package image
