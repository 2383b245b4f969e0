package flows

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeAPI answers TokenReviews from tokens (token -> user) and
// SubjectAccessReviews from allowed (user -> node names), and records the
// reviews it got.
type fakeAPI struct {
	tokens  map[string]string
	allowed map[string][]string
	fail    bool
	sars    []authzv1.SubjectAccessReviewSpec
	reviews int
}

func (f *fakeAPI) client() *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.reviews++
		if f.fail {
			return true, nil, errors.New("connection refused")
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		if user, ok := f.tokens[tr.Spec.Token]; ok {
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{
				Username: user, Groups: []string{"g1"}, Extra: map[string]authnv1.ExtraValue{"k": {"v"}},
			}}
		} else {
			tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		return true, tr, nil
	})
	c.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview).DeepCopy()
		f.sars = append(f.sars, sar.Spec)
		for _, n := range f.allowed[sar.Spec.User] {
			if n == sar.Spec.ResourceAttributes.Name {
				sar.Status.Allowed = true
			}
		}
		return true, sar, nil
	})
	return c
}

func TestKubeAuthorizer(t *testing.T) {
	api := &fakeAPI{
		tokens:  map[string]string{"alice-token": "alice", "bob-token": "bob"},
		allowed: map[string][]string{"alice": {"node-a"}, "bob": {"node-b"}},
	}
	a := NewKubeAuthorizer(api.client(), "node-a")
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	ctx := context.Background()

	if err := a.Authorize(ctx, "alice-token"); err != nil {
		t.Errorf("Authorize(alice) = %v, want nil", err)
	}
	want := authzv1.SubjectAccessReviewSpec{
		User: "alice", Groups: []string{"g1"}, Extra: map[string]authzv1.ExtraValue{"k": {"v"}},
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "flows", Name: "node-a"},
	}
	if len(api.sars) != 1 || api.sars[0].User != want.User || *api.sars[0].ResourceAttributes != *want.ResourceAttributes ||
		len(api.sars[0].Groups) != 1 || api.sars[0].Extra["k"][0] != "v" {
		t.Errorf("SubjectAccessReviews = %+v, want one %+v", api.sars, want)
	}
	if err := a.Authorize(ctx, "bob-token"); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("Authorize(bob, allowed on node-b only) = %v, want ErrPermissionDenied", err)
	}
	if err := a.Authorize(ctx, "forged"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Authorize(forged) = %v, want ErrUnauthenticated", err)
	}

	// Decisions are cached for a while, then asked again.
	reviews := api.reviews
	for _, tok := range []string{"alice-token", "bob-token", "forged"} {
		a.Authorize(ctx, tok)
	}
	if api.reviews != reviews {
		t.Errorf("%d token reviews for cached decisions, want none", api.reviews-reviews)
	}
	api.allowed["alice"] = nil // alice's RoleBinding removed
	now = now.Add(authCacheTTL)
	if err := a.Authorize(ctx, "alice-token"); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("Authorize(alice) after the cache expired and access was revoked = %v, want ErrPermissionDenied", err)
	}

	// Failing to ask is not a decision, and is not cached.
	api.fail = true
	now = now.Add(authCacheTTL)
	err := a.Authorize(ctx, "alice-token")
	if err == nil || errors.Is(err, ErrPermissionDenied) || errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Authorize with the API server down = %v, want an error that is no decision", err)
	}
	api.fail = false
	api.allowed["alice"] = []string{"node-a"}
	if err := a.Authorize(ctx, "alice-token"); err != nil {
		t.Errorf("Authorize(alice) once the API server is back = %v, want nil", err)
	}
}

func TestPublishCert(t *testing.T) {
	c := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Namespace: "weft-system", Name: "weft-agent-x", Annotations: map[string]string{"keep": "me"},
	}})
	attempts := 0
	c.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if attempts++; attempts == 1 {
			return true, nil, errors.New("etcd leader changed")
		}
		return false, nil, nil
	})
	_, certPEM, err := SelfSignedCert("node-a", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := PublishCert(ctx, c, "weft-system", "weft-agent-x", certPEM, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	pod, err := c.CoreV1().Pods("weft-system").Get(ctx, "weft-agent-x", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := pod.Annotations[CertAnnotation]; got != string(certPEM) || pod.Annotations["keep"] != "me" {
		t.Errorf("annotations after publish = %v, want %s = the certificate, others kept", pod.Annotations, CertAnnotation)
	}
	if attempts != 2 {
		t.Errorf("%d patch attempts, want 2 (one failure, one retry)", attempts)
	}
}
