package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Node facts the emulator reports.
const (
	leaseNamespace          = "kube-node-lease"
	leaseDurationSeconds    = 40
	containerRuntimeVersion = "weft-emulator://0.1"
	kubeletPort             = 10250
)

// nodeCapacity is every emulated node's capacity and allocatable.
func nodeCapacity() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("4"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
}

// heartbeat renews the node's Lease and status at start and every
// HeartbeatInterval until ctx ends. Failures are logged and retried.
func (k *kubelet) heartbeat(ctx context.Context) {
	var version string
	var lastReady *bool
	t := time.NewTicker(k.cfg.HeartbeatInterval)
	defer t.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		if version == "" {
			if v, err := k.client.Discovery().ServerVersion(); err != nil {
				k.log.Warn("get server version", "err", err)
			} else {
				version = v.GitVersion
			}
		}
		ok := true
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("renew node lease", "err", err)
			ok = false
		}
		ready := k.net.ready()
		if err := k.updateNodeStatus(ctx, version, ready); err != nil && ctx.Err() == nil {
			k.log.Warn("update node status", "err", err)
			ok = false
		} else if lastReady == nil || *lastReady != ready {
			k.log.Info("node status", "ready", ready, "kubeletVersion", version)
			lastReady = ptr.To(ready)
		}
		// Retry soon after a failure, then settle on the interval.
		var wait <-chan time.Time = t.C
		if !ok {
			retry.Reset(time.Second)
			wait = retry.C
		}
		select {
		case <-ctx.Done():
			return
		case <-wait:
		}
	}
}

// renewLease creates or renews the node's Lease in kube-node-lease.
func (k *kubelet) renewLease(ctx context.Context) error {
	leases := k.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(k.cfg.NodeName),
				LeaseDurationSeconds: ptr.To[int32](leaseDurationSeconds),
				RenewTime:            &now,
			},
		}
		if node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{}); err == nil {
			lease.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}}
		}
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create lease: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get lease: %w", err)
	}
	lease.Spec.HolderIdentity = ptr.To(k.cfg.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To[int32](leaseDurationSeconds)
	lease.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update lease: %w", err)
	}
	return nil
}

// updateNodeStatus patches the node's status (nodes/status): conditions,
// addresses, capacity and node info.
func (k *kubelet) updateNodeStatus(ctx context.Context, version string, networkReady bool) error {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	status := k.nodeStatus(node, version, networkReady, metav1.Now())
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return fmt.Errorf("encode node status: %w", err)
	}
	if _, err := k.client.CoreV1().Nodes().Patch(ctx, k.cfg.NodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("patch node status: %w", err)
	}
	return nil
}

// nodeStatus computes the node's status; conditions keep their transition
// times while their status holds.
func (k *kubelet) nodeStatus(node *corev1.Node, version string, networkReady bool, at metav1.Time) corev1.NodeStatus {
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: at, LastTransitionTime: at}
		for _, old := range node.Status.Conditions {
			if old.Type == t && old.Status == s && !old.LastTransitionTime.IsZero() {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	ready := cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status")
	if !networkReady {
		ready = cond(corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady",
			"container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	machineID, _ := os.ReadFile("/etc/machine-id")
	return corev1.NodeStatus{
		Capacity:    nodeCapacity(),
		Allocatable: nodeCapacity(),
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			ready,
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: k.cfg.NodeIP},
			{Type: corev1.NodeHostName, Address: k.cfg.NodeName},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: kubeletPort}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               strings.TrimSpace(string(machineID)),
			SystemUUID:              k.cfg.NodeName,
			BootID:                  strings.TrimSpace(string(bootID)),
			KernelVersion:           unix.ByteSliceToString(uts.Release[:]),
			OSImage:                 "weft node emulator",
			ContainerRuntimeVersion: containerRuntimeVersion,
			KubeletVersion:          version,
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
		},
	}
}
