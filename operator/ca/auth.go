package ca

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Names the API server gives a pod-bound ServiceAccount token's user in a
// TokenReview.
const (
	extraNodeName      = "authentication.kubernetes.io/node-name"
	extraPodName       = "authentication.kubernetes.io/pod-name"
	serviceAccountUser = "system:serviceaccount:"
)

// maxCachedReviews bounds the review cache; beyond it reviews are not cached.
const maxCachedReviews = 10000

// caller is an authenticated node proxy.
type caller struct {
	node string
	// pod is the proxy's pod, for logs.
	pod string
}

// authenticator reviews callers' tokens, caching positive reviews for a
// short time: a node proxy signs one CSR per ServiceAccount of its node,
// often many at once, with the same token. It is safe for concurrent use.
type authenticator struct {
	client    kubernetes.Interface
	audience  string
	nodeProxy string // "namespace/name"
	ttl       time.Duration
	now       func() time.Time

	// mu guards the fields below.
	mu sync.Mutex
	// cache maps a token's SHA-256 to its review.
	cache map[[sha256.Size]byte]cachedReview
}

type cachedReview struct {
	status  authnv1.TokenReviewStatus
	expires time.Time
}

// authenticate returns the caller of ctx's call, or a gRPC status error:
// Unauthenticated for a missing or rejected token and for any other
// ServiceAccount than the node proxy's, PermissionDenied for a token bound
// to no node, Unavailable when the API server cannot review it.
func (a *authenticator) authenticate(ctx context.Context) (caller, error) {
	token, err := bearerToken(ctx)
	if err != nil {
		return caller{}, err
	}
	st, err := a.review(ctx, token)
	if err != nil {
		return caller{}, err
	}
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return caller{}, status.Errorf(codes.Unauthenticated, "the API server rejected the token: %s", msg)
	}
	if !slices.Contains(st.Audiences, a.audience) {
		return caller{}, status.Errorf(codes.Unauthenticated, "the token is not for audience %q (it is for %v): use a projected ServiceAccount token with that audience", a.audience, st.Audiences)
	}
	sa, ok := strings.CutPrefix(st.User.Username, serviceAccountUser)
	if !ok || strings.Replace(sa, ":", "/", 1) != a.nodeProxy {
		return caller{}, status.Errorf(codes.Unauthenticated, "the token authenticates %q, not the node proxy's ServiceAccount %s: only the node proxy may request workload certificates", st.User.Username, a.nodeProxy)
	}
	node := st.User.Extra[extraNodeName]
	if len(node) != 1 || node[0] == "" {
		return caller{}, status.Errorf(codes.PermissionDenied, "the token of %s is not bound to a pod on a node (its review has no %s): use the pod's projected ServiceAccount token", a.nodeProxy, extraNodeName)
	}
	c := caller{node: node[0]}
	if pod := st.User.Extra[extraPodName]; len(pod) == 1 {
		c.pod = pod[0]
	}
	return c, nil
}

// bearerToken returns the token of the call's authorization metadata.
func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", status.Errorf(codes.Unauthenticated, "want exactly one authorization metadata value, \"Bearer <token>\", got %d", len(vals))
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", status.Error(codes.Unauthenticated, "the authorization metadata is not \"Bearer <token>\"")
	}
	return token, nil
}

// review returns the API server's TokenReview status of token, from the
// cache when a positive review of it is younger than the TTL.
func (a *authenticator) review(ctx context.Context, token string) (authnv1.TokenReviewStatus, error) {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	if a.ttl > 0 {
		a.mu.Lock()
		c, ok := a.cache[key]
		a.mu.Unlock()
		if ok && now.Before(c.expires) {
			return c.status, nil
		}
	}
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		if ctx.Err() != nil {
			return authnv1.TokenReviewStatus{}, status.FromContextError(ctx.Err()).Err()
		}
		return authnv1.TokenReviewStatus{}, status.Errorf(codes.Unavailable, "review the token with the API server: %v", err)
	}
	if a.ttl > 0 && tr.Status.Authenticated {
		expires := now.Add(a.ttl)
		if exp, ok := tokenExpiry(token); ok {
			expires = minTime(expires, exp)
		}
		a.mu.Lock()
		a.pruneLocked(now)
		if len(a.cache) < maxCachedReviews {
			if a.cache == nil {
				a.cache = map[[sha256.Size]byte]cachedReview{}
			}
			a.cache[key] = cachedReview{status: tr.Status, expires: expires}
		}
		a.mu.Unlock()
	}
	return tr.Status, nil
}

// pruneLocked drops expired reviews once the cache is full. a.mu must be
// held.
func (a *authenticator) pruneLocked(now time.Time) {
	if len(a.cache) < maxCachedReviews {
		return
	}
	for k, c := range a.cache {
		if !now.Before(c.expires) {
			delete(a.cache, k)
		}
	}
}

// tokenExpiry reads the exp claim of a JWT without verifying it: only to
// never cache a review beyond the token's own life (the API server verified
// the token).
func tokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(*claims.Exp, 0), true
}

// parseServiceAccount checks a "namespace/name" ServiceAccount reference.
func parseServiceAccount(ref string) (string, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("ServiceAccount %q is not namespace/name", ref)
	}
	return ref, nil
}
