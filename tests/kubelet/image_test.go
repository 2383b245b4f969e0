//go:build linux

package kubelet

import (
	"errors"
	"slices"
	"testing"
)

func TestImageRepository(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"plain":          {"busybox", "busybox"},
		"tag":            {"busybox:1.36", "busybox"},
		"digest":         {"ghcr.io/weftmesh/weft-agent@sha256:abcd", "ghcr.io/weftmesh/weft-agent"},
		"tag and digest": {"ghcr.io/weftmesh/weft-agent:v1@sha256:abcd", "ghcr.io/weftmesh/weft-agent"},
		"registry port":  {"localhost:5000/app", "localhost:5000/app"},
		"port and tag":   {"localhost:5000/app:dev", "localhost:5000/app"},
		"nested":         {"registry.k8s.io/coredns/coredns:v1.11.1", "registry.k8s.io/coredns/coredns"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := imageRepository(tt.in); got != tt.want {
				t.Errorf("imageRepository(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestResolveImage(t *testing.T) {
	images := map[string]string{
		"ghcr.io/weftmesh/weft-agent": "/bin/agent",
		"busybox":                     "/bin/busybox",
		"docker.io/library/nginx":     "/bin/nginx",
	}
	tests := map[string]struct {
		image, want string
		err         error
	}{
		"exact with tag":        {image: "ghcr.io/weftmesh/weft-agent:v0.1.0", want: "/bin/agent"},
		"exact with digest":     {image: "ghcr.io/weftmesh/weft-agent@sha256:00", want: "/bin/agent"},
		"docker library alias":  {image: "docker.io/library/busybox:1", want: "/bin/busybox"},
		"docker short alias":    {image: "docker.io/busybox", want: "/bin/busybox"},
		"short for library key": {image: "nginx:1.27", want: "/bin/nginx"},
		"unknown":               {image: "ghcr.io/weftmesh/other:v1", err: errImageNotFound},
		"other registry":        {image: "quay.io/busybox", err: errImageNotFound},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := resolveImage(images, tt.image)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("resolveImage(%q) = %q, %v, want %q, %v", tt.image, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestContainerCommand(t *testing.T) {
	exists := func(p string) bool { return p == "/bin/sh" }
	tests := map[string]struct {
		command, args []string
		wantBin       string
		wantArgs      []string
		err           error
	}{
		"entrypoint":           {args: []string{"--v=2"}, wantBin: "/opt/bin/agent", wantArgs: []string{"--v=2"}},
		"no args":              {wantBin: "/opt/bin/agent"},
		"command is base":      {command: []string{"agent", "run"}, args: []string{"-x"}, wantBin: "/opt/bin/agent", wantArgs: []string{"run", "-x"}},
		"command is path":      {command: []string{"/opt/bin/agent"}, wantBin: "/opt/bin/agent", wantArgs: []string{}},
		"command other path":   {command: []string{"/usr/local/bin/agent"}, wantBin: "/opt/bin/agent", wantArgs: []string{}},
		"absolute shell":       {command: []string{"/bin/sh", "-c"}, args: []string{"echo hi"}, wantBin: "/bin/sh", wantArgs: []string{"-c", "echo hi"}},
		"relative unknown":     {command: []string{"sh", "-c", "true"}, err: errCommandNotFound},
		"absolute nonexisting": {command: []string{"/no/such"}, err: errCommandNotFound},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			bin, args, err := containerCommand("/opt/bin/agent", tt.command, tt.args, exists)
			if !errors.Is(err, tt.err) {
				t.Fatalf("containerCommand(%q, %q) error = %v, want %v", tt.command, tt.args, err, tt.err)
			}
			if err != nil {
				return
			}
			if bin != tt.wantBin || !slices.Equal(args, tt.wantArgs) {
				t.Errorf("containerCommand(%q, %q) = %q %q, want %q %q", tt.command, tt.args, bin, args, tt.wantBin, tt.wantArgs)
			}
		})
	}
}
