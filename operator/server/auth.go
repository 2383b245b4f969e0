package server

import (
	"context"
	"fmt"
	"slices"
	"strings"

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
	serviceAccountUser = "system:serviceaccount:"
)

// streamAuth authenticates config streams: the caller's bearer token must
// be a pod-bound token, for the audience, of one of the accepted
// ServiceAccounts (the node proxy's and the agent's); the stream's node is
// the node the token's pod is bound to. It is safe for concurrent use.
//
// Reviews are not cached: a stream is reviewed once, when it opens, and
// stays open for hours.
type streamAuth struct {
	client   kubernetes.Interface
	audience string
	// accepted are "namespace/name" ServiceAccounts.
	accepted []string
}

// authenticate implements meshstream.ServerOptions.Authenticate: it returns
// the node of the call's token, or a gRPC status error (Unauthenticated for
// a missing or rejected token or another ServiceAccount, PermissionDenied
// for a token bound to no node, Unavailable when the API server cannot
// review it).
func (a *streamAuth) authenticate(ctx context.Context) (string, error) {
	token, err := bearerToken(ctx)
	if err != nil {
		return "", err
	}
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		if ctx.Err() != nil {
			return "", status.FromContextError(ctx.Err()).Err()
		}
		return "", status.Errorf(codes.Unavailable, "review the token with the API server: %v", err)
	}
	st := tr.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return "", status.Errorf(codes.Unauthenticated, "the API server rejected the token: %s", msg)
	}
	if !slices.Contains(st.Audiences, a.audience) {
		return "", status.Errorf(codes.Unauthenticated, "the token is not for audience %q (it is for %v): use a projected ServiceAccount token with that audience", a.audience, st.Audiences)
	}
	sa, ok := strings.CutPrefix(st.User.Username, serviceAccountUser)
	if !ok || !slices.Contains(a.accepted, strings.Replace(sa, ":", "/", 1)) {
		return "", status.Errorf(codes.Unauthenticated, "the token authenticates %q, not one of the ServiceAccounts %v that may stream node config", st.User.Username, a.accepted)
	}
	node := st.User.Extra[extraNodeName]
	if len(node) != 1 || node[0] == "" {
		return "", status.Errorf(codes.PermissionDenied, "the token of %s is not bound to a pod on a node (its review has no %s): use the pod's projected ServiceAccount token", sa, extraNodeName)
	}
	return node[0], nil
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

// checkServiceAccount checks a "namespace/name" ServiceAccount reference.
func checkServiceAccount(ref string) error {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("ServiceAccount %q is not namespace/name", ref)
	}
	return nil
}
