// Package kubelet is the local cluster's node emulator: it plays kubelet for one
// Node of a real Kubernetes control plane, running that node's pods as ordinary
// processes in per-pod network namespaces (wired by real CNI plugins), private
// mount namespaces and cgroups whose path contains pod<uid>, as kubelet and a
// container runtime would (ARCHITECTURE.md §8).
//
// Run is the emulator; Shim is the container starter it re-executes for every
// container process and exec probe. The emulator uses only a node's
// credentials, so the API server's Node authorizer and NodeRestriction admission
// see the same requests they would see from a real kubelet.
//
// Documented deviations from kubelet:
//   - Images are a static map (Config.Images) to local binaries; the binary is
//     the image's ENTRYPOINT, its CMD is empty, pull policies do nothing. A
//     command must name the image's binary or an existing absolute path.
//   - There is no root file system, PID or user namespace, user switching,
//     securityContext, resource enforcement or OOM killing: a container sees
//     the host's file system (mount points of its volumes are created there),
//     with its volumes, /etc/hosts, /etc/hostname and /etc/resolv.conf
//     bind-mounted in a private mount namespace. hostPath volumes resolve
//     under Config.Root; emptyDir medium Memory is a plain directory;
//     mountPropagation is ignored (mounts are private); PVC, CSI and other
//     volume types are refused with a FailedMount event.
//   - Crash-loop back-off starts at 1s and is capped at 10s (kubelet: 10s and
//     5 min), for test speed; it resets after a container ran 20s.
//   - postStart hooks run alongside the container instead of blocking its
//     start; sidecars (restartable init containers) stop together with the
//     other containers; termination messages, activeDeadlineSeconds, image
//     updates of running pods and ephemeral containers are not supported.
//   - Container logs are the raw stdout and stderr, not CRI-formatted, and
//     are kept after the pod is deleted.
//   - The node reports Ready only while a *.conflist exists in
//     Config.CNIConfDir, as kubelet reports NetworkReady.
//
// This package is test infrastructure: it must never be imported by weft's
// production binaries.
package kubelet
