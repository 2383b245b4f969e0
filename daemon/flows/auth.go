package flows

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

var (
	// ErrUnauthenticated is wrapped by Authorizer errors for a token that
	// does not authenticate anyone.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied is wrapped by Authorizer errors for a caller that
	// may not read this node's flows.
	ErrPermissionDenied = errors.New("permission denied")
)

// Authorizer decides whether the owner of a bearer token may read this
// node's flows. Authorize returns nil if so, an error wrapping
// ErrUnauthenticated or ErrPermissionDenied if not, and any other error
// when it could not decide.
type Authorizer interface {
	Authorize(ctx context.Context, token string) error
}

// AuthorizerFunc is an Authorizer.
type AuthorizerFunc func(ctx context.Context, token string) error

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, token string) error { return f(ctx, token) }

// KubeAuthorizer authorises with the API server, as kubelet does for its
// own API: a TokenReview (the API server's default audiences) names the
// caller, then a SubjectAccessReview asks whether the caller may "get" the
// "flows" subresource of this node ("nodes/flows", group ""). Decisions
// are cached briefly per token.
//
// KubeAuthorizer is safe for concurrent use.
type KubeAuthorizer struct {
	client   kubernetes.Interface
	nodeName string
	ttl      time.Duration
	now      func() time.Time

	// mu guards the field below.
	mu    sync.Mutex
	cache map[[sha256.Size]byte]decision
}

type decision struct {
	err     error // nil: allowed
	expires time.Time
}

// Defaults of KubeAuthorizer.
const (
	authCacheTTL     = 10 * time.Second
	authCacheEntries = 1024
	authTimeout      = 10 * time.Second
)

// NewKubeAuthorizer returns a KubeAuthorizer for node nodeName.
func NewKubeAuthorizer(client kubernetes.Interface, nodeName string) *KubeAuthorizer {
	return &KubeAuthorizer{client: client, nodeName: nodeName, ttl: authCacheTTL, now: time.Now,
		cache: map[[sha256.Size]byte]decision{}}
}

// Authorize implements Authorizer. Decisions (allowed, unauthenticated,
// denied) are cached for 10 s; failures to ask are not.
func (a *KubeAuthorizer) Authorize(ctx context.Context, token string) error {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	a.mu.Lock()
	d, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(d.expires) {
		return d.err
	}
	err := a.review(ctx, token)
	if err != nil && !errors.Is(err, ErrUnauthenticated) && !errors.Is(err, ErrPermissionDenied) {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= authCacheEntries {
		for k, d := range a.cache {
			if !now.Before(d.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= authCacheEntries {
			clear(a.cache)
		}
	}
	a.cache[key] = decision{err: err, expires: now.Add(a.ttl)}
	return err
}

func (a *KubeAuthorizer) review(ctx context.Context, token string) error {
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create token review: %w", err)
	}
	if !tr.Status.Authenticated {
		if tr.Status.Error != "" {
			return fmt.Errorf("%w: %s", ErrUnauthenticated, tr.Status.Error)
		}
		return fmt.Errorf("%w: token not accepted", ErrUnauthenticated)
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
			ResourceAttributes: &authzv1.ResourceAttributes{
				Verb: "get", Group: "", Resource: "nodes", Subresource: "flows", Name: a.nodeName,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create subject access review for %s: %w", u.Username, err)
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		why := sar.Status.Reason
		if why == "" {
			why = "no rule allows it"
		}
		return fmt.Errorf("%w: %s may not get nodes/flows %s: %s", ErrPermissionDenied, u.Username, a.nodeName, why)
	}
	return nil
}
