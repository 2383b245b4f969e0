//go:build linux

package kubelet

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// errImageNotFound reports an image that is not in Config.Images; it is the
// emulator's ErrImagePull.
var errImageNotFound = errors.New("image not found")

// errCommandNotFound reports a container command that is neither the image's
// entrypoint nor an existing absolute path; it is CreateContainerError.
var errCommandNotFound = errors.New("command not found")

// imageRepository strips the tag and digest from an image reference:
// "reg:5000/a/b:v1@sha256:..." → "reg:5000/a/b".
func imageRepository(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	slash := strings.LastIndexByte(image, '/')
	if i := strings.LastIndexByte(image, ':'); i > slash {
		image = image[:i]
	}
	return image
}

// canonicalRepository spells a repository the way Docker resolves it, so
// "busybox", "docker.io/busybox" and "docker.io/library/busybox" are equal.
func canonicalRepository(repo string) string {
	first, rest, hasSlash := strings.Cut(repo, "/")
	if !hasSlash {
		return "docker.io/library/" + repo
	}
	if !strings.ContainsAny(first, ".:") && first != "localhost" {
		return "docker.io/" + repo
	}
	if first == "index.docker.io" || first == "registry-1.docker.io" {
		first = "docker.io"
	}
	if first == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	return first + "/" + rest
}

// resolveImage maps an image reference to the local binary that is its
// entrypoint: an exact repository match wins, then one equal after Docker's
// normalisation.
func resolveImage(images map[string]string, image string) (string, error) {
	repo := imageRepository(image)
	if bin, ok := images[repo]; ok {
		return bin, nil
	}
	want := canonicalRepository(repo)
	keys := slices.Sorted(maps.Keys(images))
	for _, k := range keys {
		if canonicalRepository(imageRepository(k)) == want {
			return images[k], nil
		}
	}
	return "", fmt.Errorf("resolve image %q: %w", image, errImageNotFound)
}

// statFunc reports whether an absolute path is an existing regular file; it is
// a parameter so tests need no file system.
type statFunc func(path string) bool

// isExecutableFile is the statFunc of the real file system.
func isExecutableFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// containerCommand returns the binary and arguments a container runs, with
// Kubernetes' semantics for an image whose ENTRYPOINT is imageBin and whose CMD
// is empty: command replaces the entrypoint and args follow. A command whose
// first word names the image's binary (its base name or its path) runs the
// image's binary; any other command must be an absolute path that exists here.
// command and args must already be $(VAR)-expanded.
func containerCommand(imageBin string, command, args []string, exists statFunc) (string, []string, error) {
	if len(command) == 0 {
		return imageBin, args, nil
	}
	first := command[0]
	rest := append(append([]string{}, command[1:]...), args...)
	if first == imageBin || filepath.Base(first) == filepath.Base(imageBin) {
		return imageBin, rest, nil
	}
	if filepath.IsAbs(first) && exists(first) {
		return first, rest, nil
	}
	return "", nil, fmt.Errorf("start %q: %w: not the image's entrypoint %q and not an executable absolute path", first, errCommandNotFound, filepath.Base(imageBin))
}

// imageID is the imageID reported in container statuses.
func imageID(image, bin string) string {
	return "weft-emulator://" + imageRepository(image) + "@" + bin
}
