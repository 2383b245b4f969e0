//go:build linux

package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(data)
}

func TestAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	if err := atomicWrite(dir, map[string]volumeFile{
		"a":     {Data: []byte("one"), Mode: 0o644},
		"sub/b": {Data: []byte("two"), Mode: 0o600},
	}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "a")); got != "one" {
		t.Errorf("a = %q, want %q", got, "one")
	}
	fi, err := os.Stat(filepath.Join(dir, "sub/b"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("sub/b mode = %v, %v, want 0600", fi.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "a")); err != nil || target != "..data/a" {
		t.Errorf("a links to %q, %v, want ..data/a", target, err)
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))

	if err := atomicWrite(dir, map[string]volumeFile{"a": {Data: []byte("three"), Mode: 0o644}}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "a")); got != "three" {
		t.Errorf("a = %q, want %q", got, "three")
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("stale path sub still exists: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old data dir %s still exists: %v", first, err)
	}
	if err := atomicWrite(dir, map[string]volumeFile{"../x": {}}); err == nil {
		t.Errorf("atomicWrite(../x) = nil, want error")
	}
}

func TestHostPathUnder(t *testing.T) {
	root := t.TempDir()
	typ := func(t corev1.HostPathType) *corev1.HostPathType { return &t }
	if err := os.MkdirAll(filepath.Join(root, "exists"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		hp      corev1.HostPathVolumeSource
		want    string
		wantErr bool
		isFile  bool
	}{
		"directory or create": {hp: corev1.HostPathVolumeSource{Path: "/var/run/weft", Type: typ(corev1.HostPathDirectoryOrCreate)}, want: "var/run/weft"},
		"unset creates dir":   {hp: corev1.HostPathVolumeSource{Path: "/data"}, want: "data"},
		"file or create":      {hp: corev1.HostPathVolumeSource{Path: "/run/x.lock", Type: typ(corev1.HostPathFileOrCreate)}, want: "run/x.lock", isFile: true},
		"escape is contained": {hp: corev1.HostPathVolumeSource{Path: "/../../etc"}, want: "etc"},
		"directory exists":    {hp: corev1.HostPathVolumeSource{Path: "/exists", Type: typ(corev1.HostPathDirectory)}, want: "exists"},
		"directory missing":   {hp: corev1.HostPathVolumeSource{Path: "/missing", Type: typ(corev1.HostPathDirectory)}, wantErr: true},
		"socket missing":      {hp: corev1.HostPathVolumeSource{Path: "/s.sock", Type: typ(corev1.HostPathSocket)}, wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := hostPathUnder(root, &tt.hp)
			if (err != nil) != tt.wantErr {
				t.Fatalf("hostPathUnder(%q) error = %v, want error %v", tt.hp.Path, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if want := filepath.Join(root, tt.want); got != want {
				t.Errorf("hostPathUnder(%q) = %q, want %q", tt.hp.Path, got, want)
			}
			fi, err := os.Stat(got)
			if err != nil || fi.Mode().IsRegular() != tt.isFile {
				t.Errorf("hostPathUnder(%q) made %v, %v, want file %v", tt.hp.Path, fi, err, tt.isFile)
			}
		})
	}
}

// fakeTokens issues numbered tokens that live for life.
type fakeTokens struct {
	life time.Duration
	reqs []*authenticationv1.TokenRequest
}

func (f *fakeTokens) Token(_ context.Context, ns, sa string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	f.reqs = append(f.reqs, req)
	out := req.DeepCopy()
	out.Status.Token = ns + "/" + sa + "/" + string(rune('0'+len(f.reqs)))
	out.Status.ExpirationTimestamp = metav1.NewTime(time.Now().Add(f.life))
	return out, nil
}

func TestPodVolumes(t *testing.T) {
	root := t.TempDir()
	objects := fakeObjects{
		configMaps: map[string]*corev1.ConfigMap{
			"app/kube-root-ca.crt": {Data: map[string]string{"ca.crt": "CA"}},
			"app/cfg":              {Data: map[string]string{"a.yaml": "a: 1", "b.yaml": "b: 2"}, BinaryData: map[string][]byte{"bin": {0, 1}}},
		},
		secrets: map[string]*corev1.Secret{"app/sec": {Data: map[string][]byte{"key": []byte("k")}}},
	}
	tokens := &fakeTokens{life: time.Hour}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web", UID: "u1", Labels: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			Containers:         []corev1.Container{{Name: "c"}},
			Volumes: []corev1.Volume{
				{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					DefaultMode: ptr.To[int32](0o644),
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
						{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
							Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
							{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
					},
				}}},
				{Name: "aud", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "t", Audience: "weft"}},
				}}}},
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"},
					Items:                []corev1.KeyToPath{{Key: "a.yaml", Path: "conf/a.yaml", Mode: ptr.To[int32](0o600)}},
				}}},
				{Name: "allcfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "optional", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "none"}, Optional: ptr.To(true)}}},
				{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: ptr.To[int32](0o400)}}},
				{Name: "labels", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/weft"}}},
			},
		},
	}
	v := newPodVolumes(root, filepath.Join(root, "pods/u1"), objects, tokens)
	if err := v.sync(context.Background(), pod, podRuntime{}); err != nil {
		t.Fatal(err)
	}
	vol := func(name, file string) string {
		p, _, ok := v.path(name)
		if !ok {
			t.Fatalf("volume %s not set up", name)
		}
		return readFile(t, filepath.Join(p, file))
	}
	checks := map[string]struct{ got, want string }{
		"token":       {vol("kube-api-access-x", "token"), "app/web/1"},
		"ca":          {vol("kube-api-access-x", "ca.crt"), "CA"},
		"namespace":   {vol("kube-api-access-x", "namespace"), "app"},
		"audience":    {vol("aud", "t"), "app/web/2"},
		"item":        {vol("cfg", "conf/a.yaml"), "a: 1"},
		"all keys":    {vol("allcfg", "b.yaml"), "b: 2"},
		"binary data": {vol("allcfg", "bin"), "\x00\x01"},
		"secret":      {vol("sec", "key"), "k"},
		"labels":      {vol("labels", "labels"), `a="b"`},
	}
	for name, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", name, c.got, c.want)
		}
	}
	if p, _, _ := v.path("host"); p != filepath.Join(root, "var/run/weft") {
		t.Errorf("hostPath volume at %q, want under root", p)
	}
	if _, apiData, _ := v.path("scratch"); apiData {
		t.Errorf("emptyDir is an API data volume")
	}
	if fi, err := os.Stat(filepath.Join(root, "pods/u1/volumes/sec/key")); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("secret mode = %v, %v, want 0400", fi.Mode(), err)
	}
	req := tokens.reqs[0].Spec
	if req.BoundObjectRef == nil || req.BoundObjectRef.Kind != "Pod" || req.BoundObjectRef.UID != "u1" || *req.ExpirationSeconds != 3607 {
		t.Errorf("token request = %+v, want bound to pod u1 for 3607s", req)
	}
	if got := tokens.reqs[1].Spec.Audiences; len(got) != 1 || got[0] != "weft" {
		t.Errorf("audiences = %v, want [weft]", got)
	}

	// A second sync within the token's lifetime requests nothing new.
	if err := v.sync(context.Background(), pod, podRuntime{}); err != nil {
		t.Fatal(err)
	}
	if len(tokens.reqs) != 2 {
		t.Errorf("token requests after resync = %d, want 2", len(tokens.reqs))
	}
	// Past 80% of the lifetime the token is refreshed and rewritten.
	for k, c := range v.cache {
		c.refresh = time.Now().Add(-time.Second)
		v.cache[k] = c
	}
	if err := v.sync(context.Background(), pod, podRuntime{}); err != nil {
		t.Fatal(err)
	}
	if got := vol("kube-api-access-x", "token"); got != "app/web/3" {
		t.Errorf("refreshed token = %q, want app/web/3", got)
	}
	if next := v.nextRefresh(); time.Until(next) > volumeRefreshPeriod {
		t.Errorf("next refresh in %v, want at most %v", time.Until(next), volumeRefreshPeriod)
	}
}

func TestPodVolumesMissingConfigMap(t *testing.T) {
	root := t.TempDir()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "none"}}}}}},
	}
	v := newPodVolumes(root, filepath.Join(root, "pod"), fakeObjects{}, &fakeTokens{})
	if err := v.sync(context.Background(), pod, podRuntime{}); err == nil {
		t.Errorf("sync() = nil, want error for a missing configmap")
	}
}
