package preflight

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// KernelVersion is the numeric part of a kernel release. It is a plain value.
type KernelVersion struct {
	Major, Minor, Patch int
}

func (v KernelVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less reports whether v is older than w.
func (v KernelVersion) Less(w KernelVersion) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// Kernel thresholds: tcx (inbound redirection) needs 6.6; below 5.10 the
// cgroup hooks and helpers the programs need are missing.
var (
	kernelRecommended = KernelVersion{6, 6, 0}
	kernelMinimum     = KernelVersion{5, 10, 0}
)

// ParseKernelRelease parses the leading "major.minor[.patch]" of a kernel
// release as uname -r prints it ("6.18.44-fc-v1045", "5.10.0-21-amd64",
// "6.1", "6.9.0-rc1+").
func ParseKernelRelease(release string) (KernelVersion, error) {
	s := strings.TrimSpace(release)
	var nums []int
	for len(nums) < 3 {
		end := 0
		for end < len(s) && s[end] >= '0' && s[end] <= '9' {
			end++
		}
		if end == 0 {
			break
		}
		n, err := strconv.Atoi(s[:end])
		if err != nil {
			return KernelVersion{}, fmt.Errorf("parse kernel release %q: %w", release, err)
		}
		nums = append(nums, n)
		s = s[end:]
		if !strings.HasPrefix(s, ".") {
			break
		}
		s = s[1:]
	}
	if len(nums) < 2 {
		return KernelVersion{}, fmt.Errorf("parse kernel release %q: want major.minor", release)
	}
	v := KernelVersion{Major: nums[0], Minor: nums[1]}
	if len(nums) == 3 {
		v.Patch = nums[2]
	}
	return v, nil
}

// checkKernel judges a kernel release string.
func checkKernel(release string) Result {
	release = strings.TrimSpace(release)
	r := Result{Name: "kernel"}
	v, err := ParseKernelRelease(release)
	switch {
	case err != nil:
		r.Status, r.Detail = StatusFail, err.Error()
		r.Hint = "cannot judge the kernel; weft needs Linux " + kernelRecommended.short() + " or later"
	case v.Less(kernelMinimum):
		r.Status, r.Detail = StatusFail, "kernel "+release+" is older than "+kernelMinimum.short()
		r.Hint = "upgrade to Linux " + kernelRecommended.short() + " or later"
	case v.Less(kernelRecommended):
		r.Status, r.Detail = StatusWarn, "kernel "+release+" is older than "+kernelRecommended.short()+" (tcx)"
		r.Hint = "inbound redirection attaches with tcx, which needs Linux " + kernelRecommended.short() + ": upgrade the kernel"
	default:
		r.Status, r.Detail = StatusPass, "kernel "+release
	}
	return r
}

func (v KernelVersion) short() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

func checkKernelHost() Result {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return Result{Name: "kernel", Status: StatusFail, Detail: fmt.Sprintf("read kernel release: %v", err),
			Hint: "weft runs on Linux with /proc mounted"}
	}
	return checkKernel(string(b))
}

// btfPath is the kernel's own BTF, which CO-RE relocation needs.
const btfPath = "/sys/kernel/btf/vmlinux"

// checkBTF checks that the kernel exposes its BTF at path.
func checkBTF(path string) Result {
	r := Result{Name: "btf"}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		r.Status, r.Detail = StatusFail, fmt.Sprintf("no kernel BTF: %v", err)
		r.Hint = "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.x)"
	case !fi.Mode().IsRegular() || fi.Size() == 0:
		r.Status, r.Detail = StatusFail, fmt.Sprintf("%s is not a BTF file (mode %v, %d bytes)", path, fi.Mode(), fi.Size())
		r.Hint = "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
	default:
		// sysfs reports the real size of the BTF blob.
		r.Status, r.Detail = StatusPass, fmt.Sprintf("%s (%.1f MiB)", path, float64(fi.Size())/(1<<20))
	}
	return r
}
