package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// Filesystem magics (statfs(2) f_type).
const (
	bpffsMagic = 0xcafe4a11
)

var fsNames = map[int64]string{
	bpffsMagic: "bpffs",
	0x01021994: "tmpfs",
	0x62656572: "sysfs",
	0xef53:     "ext4",
	0x58465342: "xfs",
	0x9123683e: "btrfs",
	0x794c7630: "overlayfs",
	0x9fa0:     "procfs",
}

func fsName(magic int64) string {
	if n, ok := fsNames[magic]; ok {
		return n
	}
	return "an unknown filesystem"
}

// statfsFunc returns the filesystem magic of path; errors wrap fs.ErrNotExist
// when path does not exist.
type statfsFunc func(path string) (int64, error)

// checkBPFFS checks that the pin root is on a bpffs. A pin root that does not
// exist yet (the agent creates it) is judged by its nearest existing parent.
func checkBPFFS(pinRoot string, statfs statfsFunc) Result {
	r := Result{Name: "bpffs"}
	hint := "mount a bpffs there (mount -t bpf bpf " + pinRoot + "), or give the agent's pod a hostPath of the node's bpffs"
	pinRoot = filepath.Clean(pinRoot)
	dir := pinRoot
	for {
		magic, err := statfs(dir)
		if errors.Is(err, fs.ErrNotExist) && filepath.Dir(dir) != dir {
			dir = filepath.Dir(dir)
			continue
		}
		if err != nil {
			r.Status, r.Detail, r.Hint = StatusFail, fmt.Sprintf("statfs %s: %v", dir, err), hint
			return r
		}
		where := dir
		if dir != pinRoot {
			where = fmt.Sprintf("%s does not exist yet; %s", pinRoot, dir)
		}
		if magic != bpffsMagic {
			if dir != pinRoot {
				hint = "mount a bpffs there (mkdir -p " + pinRoot + " && mount -t bpf bpf " + pinRoot + "), or give the agent's pod a hostPath of the node's bpffs"
			}
			r.Status, r.Detail, r.Hint = StatusFail, fmt.Sprintf("%s is on %s (magic %#x), not a bpffs", where, fsName(magic), magic), hint
			return r
		}
		r.Status, r.Detail = StatusPass, where+" is a bpffs"
		return r
	}
}
