//go:build linux

package kubelet

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
)

// defaultPath is the PATH of a container whose pod sets none, as most images
// declare it.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// objectSource reads the ConfigMaps and Secrets a pod references. Node
// credentials may only get them one by one, never list them.
type objectSource interface {
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
}

// configError is a container configuration problem that kubelet reports as
// the waiting reason CreateContainerConfigError and retries.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// podRuntime is what the environment and downward API need to know about a
// pod beyond its object.
type podRuntime struct {
	PodIPs      []string
	HostIPs     []string
	Hostname    string
	Allocatable corev1.ResourceList
}

// serviceEnv returns the Service environment variables of a pod in namespace:
// those of every Service in namespace with a cluster IP when enableServiceLinks
// is set, and always those of the kubernetes Service in default
// (kubelet's getServiceEnvVarMap and envvars.FromServices).
func serviceEnv(namespace string, enableServiceLinks bool, services []*corev1.Service) map[string]string {
	chosen := map[string]*corev1.Service{}
	for _, svc := range services {
		if !hasClusterIP(svc) {
			continue
		}
		switch {
		case svc.Namespace == "default" && svc.Name == "kubernetes":
			if _, ok := chosen[svc.Name]; !ok {
				chosen[svc.Name] = svc
			}
		case svc.Namespace == namespace && enableServiceLinks:
			chosen[svc.Name] = svc
		}
	}
	env := map[string]string{}
	for _, svc := range chosen {
		for _, kv := range serviceEnvVars(svc) {
			env[kv[0]] = kv[1]
		}
	}
	return env
}

// hasClusterIP reports whether svc has a cluster IP (is neither headless nor
// ExternalName) and at least one port.
func hasClusterIP(svc *corev1.Service) bool {
	ip := svc.Spec.ClusterIP
	return ip != "" && ip != corev1.ClusterIPNone && len(svc.Spec.Ports) > 0
}

// serviceEnvVars returns one Service's variables in Kubernetes' order.
func serviceEnvVars(svc *corev1.Service) [][2]string {
	prefix := envVarName(svc.Name)
	ip := svc.Spec.ClusterIP
	first := strconv.Itoa(int(svc.Spec.Ports[0].Port))
	vars := [][2]string{
		{prefix + "_SERVICE_HOST", ip},
		{prefix + "_SERVICE_PORT", first},
	}
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			vars = append(vars, [2]string{prefix + "_SERVICE_PORT_" + envVarName(p.Name), strconv.Itoa(int(p.Port))})
		}
	}
	for i, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		lower := strings.ToLower(proto)
		port := strconv.Itoa(int(p.Port))
		url := lower + "://" + net.JoinHostPort(ip, port)
		if i == 0 {
			vars = append(vars, [2]string{prefix + "_PORT", url})
		}
		pp := prefix + "_PORT_" + port + "_" + strings.ToUpper(proto)
		vars = append(vars,
			[2]string{pp, url},
			[2]string{pp + "_PROTO", lower},
			[2]string{pp + "_PORT", port},
			[2]string{pp + "_ADDR", ip},
		)
	}
	return vars
}

// envVarName is kubelet's makeEnvVariableName.
func envVarName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}

// containerEnv computes a container's environment with kubelet's
// makeEnvironmentVariables semantics: envFrom first, then env in declaration
// order (each value $(VAR)-expanded against the variables so far and the
// Service variables), then the Service variables not already set. The result
// maps names to values and does not yet hold the runtime defaults.
func containerEnv(ctx context.Context, src objectSource, pod *corev1.Pod, ctr *corev1.Container, rt podRuntime, svcEnv map[string]string) (map[string]string, error) {
	env := map[string]string{}
	for _, from := range ctr.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			ref := from.ConfigMapRef
			cm, err := src.ConfigMap(ctx, pod.Namespace, ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, &configError{fmt.Errorf("get configmap %q: %w", ref.Name, err)}
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			ref := from.SecretRef
			s, err := src.Secret(ctx, pod.Namespace, ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, &configError{fmt.Errorf("get secret %q: %w", ref.Name, err)}
			}
			for k, v := range s.Data {
				env[from.Prefix+k] = string(v)
			}
		}
	}
	lookup := lookupIn(env, svcEnv)
	for _, e := range ctr.Env {
		v := e.Value
		switch {
		case v != "":
			v = expand(v, lookup)
		case e.ValueFrom != nil:
			var skip bool
			var err error
			v, skip, err = envValueFrom(ctx, src, pod, ctr, rt, e.ValueFrom)
			if err != nil {
				return nil, err
			}
			if skip {
				continue
			}
		}
		env[e.Name] = v
	}
	for k, v := range svcEnv {
		if _, ok := env[k]; !ok {
			env[k] = v
		}
	}
	return env, nil
}

// envValueFrom resolves one env[].valueFrom; skip reports an optional source
// that does not exist (the variable is then not set).
func envValueFrom(ctx context.Context, src objectSource, pod *corev1.Pod, ctr *corev1.Container, rt podRuntime, from *corev1.EnvVarSource) (v string, skip bool, err error) {
	switch {
	case from.FieldRef != nil:
		v, err := podFieldValue(pod, rt, from.FieldRef.FieldPath)
		if err != nil {
			return "", false, &configError{err}
		}
		return v, false, nil
	case from.ResourceFieldRef != nil:
		v, err := resourceFieldValue(ctr, rt.Allocatable, from.ResourceFieldRef)
		if err != nil {
			return "", false, &configError{err}
		}
		return v, false, nil
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := src.ConfigMap(ctx, pod.Namespace, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", true, nil
			}
			return "", false, &configError{fmt.Errorf("get configmap %q: %w", ref.Name, err)}
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, false, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), false, nil
		}
		if optional {
			return "", true, nil
		}
		return "", false, &configError{fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)}
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := src.Secret(ctx, pod.Namespace, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", true, nil
			}
			return "", false, &configError{fmt.Errorf("get secret %q: %w", ref.Name, err)}
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), false, nil
		}
		if optional {
			return "", true, nil
		}
		return "", false, &configError{fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)}
	}
	return "", false, nil
}

// podFieldValue is the downward API's fieldRef (kubelet's
// podFieldSelectorRuntimeValue and fieldpath.ExtractFieldPathAsString).
func podFieldValue(pod *corev1.Pod, rt podRuntime, path string) (string, error) {
	first := func(ss []string) string {
		if len(ss) == 0 {
			return ""
		}
		return ss[0]
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return first(rt.PodIPs), nil
	case "status.podIPs":
		return strings.Join(rt.PodIPs, ","), nil
	case "status.hostIP":
		return first(rt.HostIPs), nil
	case "status.hostIPs":
		return strings.Join(rt.HostIPs, ","), nil
	}
	for prefix, m := range map[string]map[string]string{
		"metadata.labels":      pod.Labels,
		"metadata.annotations": pod.Annotations,
	} {
		if rest, ok := strings.CutPrefix(path, prefix+"['"); ok {
			if key, ok := strings.CutSuffix(rest, "']"); ok {
				return m[key], nil
			}
		}
	}
	return "", fmt.Errorf("resolve field path %q: unsupported", path)
}

// formatMap is the downward API's rendering of labels and annotations.
func formatMap(m map[string]string) string {
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		lines = append(lines, fmt.Sprintf("%v=%q", k, m[k]))
	}
	return strings.Join(lines, "\n")
}

// resourceFieldValue is the downward API's resourceFieldRef; unset limits
// default to the node's allocatable, as in kubelet.
func resourceFieldValue(ctr *corev1.Container, allocatable corev1.ResourceList, ref *corev1.ResourceFieldSelector) (string, error) {
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("resolve resource field %q: unsupported", ref.Resource)
	}
	var list corev1.ResourceList
	switch kind {
	case "limits":
		list = ctr.Resources.Limits
	case "requests":
		list = ctr.Resources.Requests
	default:
		return "", fmt.Errorf("resolve resource field %q: unsupported", ref.Resource)
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok && kind == "limits" {
		q, ok = allocatable[corev1.ResourceName(name)]
	}
	if !ok {
		q = resource.Quantity{}
	}
	if name == string(corev1.ResourceCPU) {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// finalEnv adds the defaults a container runtime provides (PATH, HOSTNAME,
// HOME) to env and returns it as sorted NAME=value pairs for exec.
func finalEnv(env map[string]string, hostname string) []string {
	all := map[string]string{"PATH": defaultPath, "HOSTNAME": hostname, "HOME": "/root"}
	for k, v := range env {
		all[k] = v
	}
	out := make([]string, 0, len(all))
	for _, k := range slices.Sorted(maps.Keys(all)) {
		out = append(out, k+"="+all[k])
	}
	return out
}
