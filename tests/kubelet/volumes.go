//go:build linux

package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
)

// Default modes of kubelet's volume plugins.
const (
	defaultFileMode     = 0o644
	emptyDirMode        = 0o777
	volumeRefreshPeriod = 15 * time.Second
)

// tokenSource issues pod-bound ServiceAccount tokens (TokenRequest).
type tokenSource interface {
	Token(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error)
}

// volumeFile is one file of an atomically written volume.
type volumeFile struct {
	Data []byte
	Mode os.FileMode
}

// cachedToken is a token and when to refresh it.
type cachedToken struct {
	token   string
	refresh time.Time
}

// podVolumes materialises a pod's volumes under
// Root/var/lib/kubelet/pods/<uid>/volumes/<name>. It is not safe for
// concurrent use; its pod worker owns it.
type podVolumes struct {
	root    string // Config.Root: hostPath volumes resolve under it
	dir     string // the pod's volumes directory
	objects objectSource
	tokens  tokenSource

	paths   map[string]string                // volume name → directory (or file) to bind-mount
	written map[string]map[string]volumeFile // last payload per atomic volume
	cache   map[string]cachedToken           // "volume/path" → token
	next    time.Time                        // next refresh
	kinds   map[string]bool                  // volume name → read-only API data volume
}

func newPodVolumes(root, podDir string, objects objectSource, tokens tokenSource) *podVolumes {
	return &podVolumes{
		root:    root,
		dir:     filepath.Join(podDir, "volumes"),
		objects: objects,
		tokens:  tokens,
		paths:   map[string]string{},
		written: map[string]map[string]volumeFile{},
		cache:   map[string]cachedToken{},
		kinds:   map[string]bool{},
	}
}

// path returns the host path behind a volume and whether it is one of
// kubelet's read-only API data volumes (configMap, secret, downwardAPI,
// projected).
func (v *podVolumes) path(name string) (string, bool, bool) {
	p, ok := v.paths[name]
	return p, v.kinds[name], ok
}

// due reports whether the volumes should be refreshed now.
func (v *podVolumes) due(t time.Time) bool { return !t.Before(v.next) }

// nextRefresh is when the volumes next need a refresh.
func (v *podVolumes) nextRefresh() time.Time { return v.next }

// sync creates every volume on first use and refreshes the contents of the
// API data volumes (ConfigMaps, Secrets, tokens at 80% of their lifetime).
func (v *podVolumes) sync(ctx context.Context, pod *corev1.Pod, rt podRuntime) error {
	t := time.Now()
	v.next = t.Add(volumeRefreshPeriod)
	var errs []error
	for i := range pod.Spec.Volumes {
		if err := v.syncOne(ctx, pod, &pod.Spec.Volumes[i], rt, t); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", pod.Spec.Volumes[i].Name, err))
		}
	}
	return errors.Join(errs...)
}

func (v *podVolumes) syncOne(ctx context.Context, pod *corev1.Pod, vol *corev1.Volume, rt podRuntime, t time.Time) error {
	dir := filepath.Join(v.dir, vol.Name)
	src := vol.VolumeSource
	var payload map[string]volumeFile
	var err error
	switch {
	case src.EmptyDir != nil:
		if err := os.MkdirAll(dir, emptyDirMode); err != nil {
			return fmt.Errorf("create empty dir: %w", err)
		}
		if err := os.Chmod(dir, emptyDirMode); err != nil {
			return fmt.Errorf("chmod empty dir: %w", err)
		}
		v.paths[vol.Name] = dir
		return nil
	case src.HostPath != nil:
		p, err := hostPathUnder(v.root, src.HostPath)
		if err != nil {
			return err
		}
		v.paths[vol.Name] = p
		return nil
	case src.ConfigMap != nil:
		payload, err = v.configMapPayload(ctx, pod.Namespace, &corev1.ConfigMapProjection{
			LocalObjectReference: src.ConfigMap.LocalObjectReference,
			Items:                src.ConfigMap.Items,
			Optional:             src.ConfigMap.Optional,
		}, modeOr(src.ConfigMap.DefaultMode))
	case src.Secret != nil:
		payload, err = v.secretPayload(ctx, pod.Namespace, &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: src.Secret.SecretName},
			Items:                src.Secret.Items,
			Optional:             src.Secret.Optional,
		}, modeOr(src.Secret.DefaultMode))
	case src.DownwardAPI != nil:
		payload, err = downwardPayload(pod, rt, src.DownwardAPI.Items, modeOr(src.DownwardAPI.DefaultMode))
	case src.Projected != nil:
		payload, err = v.projectedPayload(ctx, pod, vol.Name, src.Projected, rt, t)
	default:
		return errors.New("set up volume: unsupported volume type (the emulator supports emptyDir, hostPath, configMap, secret, downwardAPI and projected)")
	}
	if err != nil {
		return err
	}
	v.paths[vol.Name] = dir
	v.kinds[vol.Name] = true
	if old, ok := v.written[vol.Name]; ok && payloadEqual(old, payload) {
		return nil
	}
	if err := atomicWrite(dir, payload); err != nil {
		return err
	}
	v.written[vol.Name] = payload
	return nil
}

func modeOr(m *int32) os.FileMode {
	if m == nil {
		return defaultFileMode
	}
	return os.FileMode(*m) & os.ModePerm
}

func itemMode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m) & os.ModePerm
}

// kernelFilesystems are hostPath prefixes that name the kernel's state, not
// the node's files (bpffs, cgroupfs, procfs, sysfs, devices, named network
// namespaces): all emulated
// nodes share one kernel, so these resolve to the real paths. Per-node state
// under them (a bpffs pin root) is told apart by name, as weft's chart does
// with $(NODE_NAME).
var kernelFilesystems = []string{"/sys", "/proc", "/dev", "/run/netns", "/var/run/netns"}

// hostPathUnder resolves a hostPath volume under root (kernel filesystems
// excepted) and honours its type. An unset type creates a missing
// directory, as Docker did.
func hostPathUnder(root string, hp *corev1.HostPathVolumeSource) (string, error) {
	clean := filepath.Clean("/" + hp.Path)
	p := filepath.Join(root, clean)
	for _, k := range kernelFilesystems {
		if clean == k || strings.HasPrefix(clean, k+"/") {
			p = clean
		}
	}
	typ := corev1.HostPathUnset
	if hp.Type != nil {
		typ = *hp.Type
	}
	fi, statErr := os.Stat(p)
	exists := statErr == nil
	switch typ {
	case corev1.HostPathUnset, corev1.HostPathDirectoryOrCreate:
		if !exists {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return "", fmt.Errorf("create host path %s: %w", p, err)
			}
		}
	case corev1.HostPathFileOrCreate:
		if !exists {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", fmt.Errorf("create host path %s: %w", p, err)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return "", fmt.Errorf("create host path %s: %w", p, err)
			}
			f.Close()
		}
	case corev1.HostPathDirectory:
		if !exists || !fi.IsDir() {
			return "", fmt.Errorf("hostPath type check failed: %s is not a directory", p)
		}
	case corev1.HostPathFile:
		if !exists || !fi.Mode().IsRegular() {
			return "", fmt.Errorf("hostPath type check failed: %s is not a file", p)
		}
	case corev1.HostPathSocket:
		if !exists || fi.Mode()&os.ModeSocket == 0 {
			return "", fmt.Errorf("hostPath type check failed: %s is not a socket file", p)
		}
	case corev1.HostPathCharDev:
		if !exists || fi.Mode()&os.ModeCharDevice == 0 {
			return "", fmt.Errorf("hostPath type check failed: %s is not a character device", p)
		}
	case corev1.HostPathBlockDev:
		if !exists || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			return "", fmt.Errorf("hostPath type check failed: %s is not a block device", p)
		}
	}
	return p, nil
}

// keyPayload projects the keys of a ConfigMap or Secret: all of them, or
// the listed items (a missing listed key is an error unless optional).
func keyPayload(data map[string][]byte, items []corev1.KeyToPath, mode os.FileMode, optional bool, what string) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	if len(items) == 0 {
		for k, d := range data {
			out[k] = volumeFile{Data: d, Mode: mode}
		}
		return out, nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("configure %s: key %q does not exist", what, it.Key)
		}
		out[it.Path] = volumeFile{Data: d, Mode: itemMode(it.Mode, mode)}
	}
	return out, nil
}

func (v *podVolumes) configMapPayload(ctx context.Context, ns string, p *corev1.ConfigMapProjection, mode os.FileMode) (map[string]volumeFile, error) {
	optional := p.Optional != nil && *p.Optional
	cm, err := v.objects.ConfigMap(ctx, ns, p.Name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional {
			return map[string]volumeFile{}, nil
		}
		return nil, fmt.Errorf("get configmap %s/%s: %w", ns, p.Name, err)
	}
	data := map[string][]byte{}
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	maps.Copy(data, cm.BinaryData)
	return keyPayload(data, p.Items, mode, optional, "configmap "+ns+"/"+p.Name)
}

func (v *podVolumes) secretPayload(ctx context.Context, ns string, p *corev1.SecretProjection, mode os.FileMode) (map[string]volumeFile, error) {
	optional := p.Optional != nil && *p.Optional
	s, err := v.objects.Secret(ctx, ns, p.Name)
	if err != nil {
		if apierrors.IsNotFound(err) && optional {
			return map[string]volumeFile{}, nil
		}
		return nil, fmt.Errorf("get secret %s/%s: %w", ns, p.Name, err)
	}
	return keyPayload(s.Data, p.Items, mode, optional, "secret "+ns+"/"+p.Name)
}

// downwardPayload renders downwardAPI items; volumes may use the pod's
// metadata and containers' resources.
func downwardPayload(pod *corev1.Pod, rt podRuntime, items []corev1.DownwardAPIVolumeFile, mode os.FileMode) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = podFieldValue(pod, rt, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			ctr := findContainer(pod, it.ResourceFieldRef.ContainerName)
			if ctr == nil {
				return nil, fmt.Errorf("render downward api %q: no container %q", it.Path, it.ResourceFieldRef.ContainerName)
			}
			val, err = resourceFieldValue(ctr, rt.Allocatable, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, err
		}
		out[it.Path] = volumeFile{Data: []byte(val), Mode: itemMode(it.Mode, mode)}
	}
	return out, nil
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

func (v *podVolumes) projectedPayload(ctx context.Context, pod *corev1.Pod, volName string, p *corev1.ProjectedVolumeSource, rt podRuntime, t time.Time) (map[string]volumeFile, error) {
	mode := modeOr(p.DefaultMode)
	out := map[string]volumeFile{}
	for _, s := range p.Sources {
		var part map[string]volumeFile
		var err error
		switch {
		case s.ConfigMap != nil:
			part, err = v.configMapPayload(ctx, pod.Namespace, s.ConfigMap, mode)
		case s.Secret != nil:
			part, err = v.secretPayload(ctx, pod.Namespace, s.Secret, mode)
		case s.DownwardAPI != nil:
			part, err = downwardPayload(pod, rt, s.DownwardAPI.Items, mode)
		case s.ServiceAccountToken != nil:
			var tok string
			tok, err = v.token(ctx, pod, volName, s.ServiceAccountToken, t)
			part = map[string]volumeFile{s.ServiceAccountToken.Path: {Data: []byte(tok), Mode: mode}}
		default:
			err = errors.New("project volume: unsupported source (clusterTrustBundle and podCertificate are not emulated)")
		}
		if err != nil {
			return nil, err
		}
		maps.Copy(out, part)
	}
	return out, nil
}

// token returns a pod-bound token for the projection, requesting a new one
// when none is cached or 80% of the cached one's lifetime has passed.
func (v *podVolumes) token(ctx context.Context, pod *corev1.Pod, volName string, p *corev1.ServiceAccountTokenProjection, t time.Time) (string, error) {
	key := volName + "/" + p.Path
	if c, ok := v.cache[key]; ok && t.Before(c.refresh) {
		v.soonest(c.refresh)
		return c.token, nil
	}
	exp := int64(3600)
	if p.ExpirationSeconds != nil {
		exp = *p.ExpirationSeconds
	}
	req := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(exp),
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind:       "Pod",
				APIVersion: "v1",
				Name:       pod.Name,
				UID:        pod.UID,
			},
		},
	}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	resp, err := v.tokens.Token(ctx, pod.Namespace, sa, req)
	if err != nil {
		return "", fmt.Errorf("request token for serviceaccount %s/%s: %w", pod.Namespace, sa, err)
	}
	life := time.Duration(exp) * time.Second
	if e := resp.Status.ExpirationTimestamp; !e.IsZero() {
		life = e.Sub(t)
	}
	refresh := t.Add(life * 8 / 10)
	v.cache[key] = cachedToken{token: resp.Status.Token, refresh: refresh}
	v.soonest(refresh)
	return resp.Status.Token, nil
}

func (v *podVolumes) soonest(t time.Time) {
	if t.Before(v.next) {
		v.next = t
	}
}

func payloadEqual(a, b map[string]volumeFile) bool {
	return maps.EqualFunc(a, b, func(x, y volumeFile) bool {
		return x.Mode == y.Mode && bytes.Equal(x.Data, y.Data)
	})
}

// atomicWrite replaces the files of dir with payload the way kubelet's
// AtomicWriter does: the files go into a fresh timestamped directory, the
// "..data" symlink is switched to it with one rename, and each top-level
// path is a symlink through "..data". Readers see either the old or the new
// set of files, never a mix.
func atomicWrite(dir string, payload map[string]volumeFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create volume dir: %w", err)
	}
	for p := range payload {
		if !validPayloadPath(p) {
			return fmt.Errorf("write volume %s: invalid path %q", dir, p)
		}
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("create volume data dir: %w", err)
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return fmt.Errorf("chmod volume data dir: %w", err)
	}
	for p, f := range payload {
		full := filepath.Join(ts, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("create volume subdir: %w", err)
		}
		if err := os.WriteFile(full, f.Data, f.Mode); err != nil {
			return fmt.Errorf("write volume file %s: %w", p, err)
		}
		if err := os.Chmod(full, f.Mode); err != nil {
			return fmt.Errorf("chmod volume file %s: %w", p, err)
		}
	}
	dataLink := filepath.Join(dir, "..data")
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(ts), tmpLink); err != nil {
		return fmt.Errorf("link volume data: %w", err)
	}
	if err := os.Rename(tmpLink, dataLink); err != nil {
		return fmt.Errorf("switch volume data: %w", err)
	}
	top := map[string]bool{}
	for p := range payload {
		first, _, _ := strings.Cut(p, "/")
		top[first] = true
	}
	for _, name := range slices.Sorted(maps.Keys(top)) {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return fmt.Errorf("link volume path %s: %w", name, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list volume dir: %w", err)
	}
	for _, e := range entries {
		n := e.Name()
		switch {
		case n == "..data":
		case strings.HasPrefix(n, ".."):
			if n != filepath.Base(ts) {
				_ = os.RemoveAll(filepath.Join(dir, n))
			}
		case !top[n]:
			_ = os.RemoveAll(filepath.Join(dir, n))
		}
	}
	return nil
}

// validPayloadPath rejects absolute paths, ".." elements and paths starting
// with "..", as the API validation and AtomicWriter do.
func validPayloadPath(p string) bool {
	if p == "" || filepath.IsAbs(p) || strings.HasPrefix(p, "..") {
		return false
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return false
		}
	}
	return true
}

// ensureFile writes data to path atomically (rename of a temporary file).
func ensureFile(path string, data []byte, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create dir of %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err != nil {
		return fmt.Errorf("create temp file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}
