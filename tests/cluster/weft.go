package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// WeftNamespace is where InstallWeft installs weft.
const WeftNamespace = "weft-system"

// WeftPinRoot is the agent.pinRoot value that gives every emulated node its
// own pin root (the nodes share one kernel): Kubernetes expands $(NODE_NAME)
// from the agent's env, and the result is this cluster's PinRoot(node).
func (c *Cluster) WeftPinRoot() string {
	return strings.TrimSuffix(c.PinRoot("NODE"), "NODE") + "$(NODE_NAME)"
}

// RecordFile is where a node's recording stand-in proxy writes its records.
func (c *Cluster) RecordFile(node string) string {
	return filepath.Join(c.NodeRoot(node), "var", "run", "weft", "records.jsonl")
}

// InstallWeft installs weft's chart with helm, as a user would (agents
// attached to this cluster's cgroup, one pin root per node), plus the
// recording stand-in for the node proxy (a test-only DaemonSet), and waits
// until both run on every node and weft-cni is chained into every node's
// CNI config.
func (c *Cluster) InstallWeft(ctx context.Context) error {
	// The recording stand-in replaces the chart's node proxy.
	if err := c.helmInstall(ctx, []string{"ztunnel.enabled=false", "operator.enabled=false"}); err != nil {
		return err
	}
	pinRoot := c.WeftPinRoot()
	labels := map[string]string{"app": "weft-recordproxy"}
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-recordproxy", Namespace: WeftNamespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:                   true,
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{{
						Name:  "proxy",
						Image: ImageRegistry + "/weft-recordproxy:dev",
						Args: []string{"--socket", "/var/run/weft/ztunnel.sock", "--record-file", "/var/run/weft/records.jsonl",
							"--mark", "1337", "--orig-dst-map", pinRoot},
						Env:             []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
						SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "sockets", MountPath: "/var/run/weft"},
							{Name: "bpffs", MountPath: "/sys/fs/bpf"},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "sockets", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/weft", Type: &dirOrCreate}}},
						{Name: "bpffs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/fs/bpf"}}},
					},
				},
			},
		},
	}
	if _, err := c.Client.AppsV1().DaemonSets(WeftNamespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create recording proxy: %w", err)
	}
	return c.waitDaemonSet(ctx, "weft-recordproxy")
}
