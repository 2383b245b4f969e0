package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// GoBuildFlags are the flags of every image binary: no file system paths
// (-trimpath), no VCS stamp, no build ID and no symbol table, and the version
// in main.version (binaries without that variable ignore the -X).
func GoBuildFlags(version string) []string {
	return []string{
		"-trimpath",
		"-buildvcs=false",
		"-ldflags=-s -w -buildid= -X main.version=" + version,
	}
}

// GoBuildEnv is the environment of a build, on top of the caller's: static
// (no cgo) linux/amd64 binaries for the baseline amd64 level.
var GoBuildEnv = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1"}

// GoBuild builds the main packages pkgs (import paths or ./ patterns) of the
// module in dir into outDir with GoBuildFlags and GoBuildEnv, using the go
// command on $PATH. Each binary is named after its package's directory.
func GoBuild(ctx context.Context, dir, outDir, version string, pkgs ...string) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	args := append([]string{"build", "-o", outDir + string(os.PathSeparator)}, GoBuildFlags(version)...)
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), GoBuildEnv...)
	// GOFLAGS could add flags that change the output (e.g. -race, -tags).
	cmd.Env = append(cmd.Env, "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}
