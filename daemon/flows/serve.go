package flows

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	flowsv1 "github.com/weftmesh/weft/api/flows/v1"
)

// stopGrace bounds a graceful stop of an Observer listener: requests in
// flight get this long to finish before their connections are closed.
const stopGrace = 2 * time.Second

// ServeExport serves FlowExport (api/flows/v1) on l until ctx ends, then
// closes l and every producer stream, and returns nil. It returns an error
// if serving fails. The caller authorises producers by who can reach l (a
// root-only unix socket, see ListenUnix).
func (s *Server) ServeExport(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer()
	flowsv1.RegisterFlowExportServer(srv, exportServer{s: s})
	// Producers never end their streams; nothing is lost by cutting them:
	// the ring lives in this process.
	return serve(ctx, srv, l, "flow export", srv.Stop)
}

// ServeObserver serves Hubble's Observer API and the gRPC health service
// (SERVING for "" and "hubble.server.Observer") on l without authorisation,
// until ctx ends; then health turns NOT_SERVING, following streams end, l is
// closed, and it returns nil. For local clients on a root-only unix socket.
func (s *Server) ServeObserver(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer()
	hs := s.register(ctx, srv)
	return serve(ctx, srv, l, "observer", gracefulStop(srv, hs))
}

// ServeObserverTLS is ServeObserver over TLS with tlsConfig, and every call
// but the health service's authorised by authz with the bearer token of
// its "authorization: Bearer <token>" metadata: a call without a valid
// token fails with Unauthenticated, one whose caller may not read this
// node's flows with PermissionDenied, and one authz could not decide with
// Unavailable. GetNodes then reports TLS with this node's name as the
// server name.
func (s *Server) ServeObserverTLS(ctx context.Context, l net.Listener, tlsConfig *tls.Config, authz Authorizer) error {
	if tlsConfig == nil || authz == nil {
		return errors.New("serve observer over tls: no tls config or no authorizer")
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := s.authorize(ctx, authz, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := s.authorize(ss.Context(), authz, info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	hs := s.register(ctx, srv)
	name := s.nodeName
	s.tlsServerName.Store(&name)
	defer s.tlsServerName.Store(nil)
	return serve(ctx, srv, l, "observer (tls)", gracefulStop(srv, hs))
}

// register registers the Observer and health services on srv; following
// GetFlows streams end when ctx does.
func (s *Server) register(ctx context.Context, srv *grpc.Server) *health.Server {
	observerpb.RegisterObserverServer(srv, observer{s: s, stop: ctx})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(ObserverServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	return hs
}

func gracefulStop(srv *grpc.Server, hs *health.Server) func() {
	return func() {
		hs.Shutdown()
		t := time.AfterFunc(stopGrace, srv.Stop)
		defer t.Stop()
		srv.GracefulStop()
	}
}

// serve runs srv on l until ctx ends (then stop stops it) or serving fails.
func serve(ctx context.Context, srv *grpc.Server, l net.Listener, what string, stop func()) error {
	served := make(chan struct{})
	stopped := make(chan struct{})
	go func() { // owned by serve, which waits for it
		defer close(stopped)
		select {
		case <-ctx.Done():
			stop()
		case <-served:
		}
	}()
	err := srv.Serve(l)
	close(served)
	<-stopped
	if ctx.Err() != nil {
		return nil
	}
	srv.Stop()
	if err == nil {
		err = errors.New("server stopped")
	}
	return fmt.Errorf("serve %s on %s: %w", what, l.Addr(), err)
}

// authorize checks the bearer token of a call to method.
func (s *Server) authorize(ctx context.Context, authz Authorizer, method string) error {
	if strings.HasPrefix(method, "/"+healthpb.Health_ServiceDesc.ServiceName+"/") {
		return nil // serving status only: probes need no token
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, `missing "authorization: Bearer <token>" metadata`)
	}
	scheme, token, _ := strings.Cut(vals[0], " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return status.Error(codes.Unauthenticated, `authorization metadata is not "Bearer <token>"`)
	}
	err := authz.Authorize(ctx, token)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnauthenticated):
		s.log.Debug("refused flow api call", "method", method, "err", err)
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrPermissionDenied):
		s.log.Info("refused flow api call", "method", method, "err", err)
		return status.Error(codes.PermissionDenied, err.Error())
	default:
		s.log.Warn("cannot authorize flow api call", "method", method, "err", err)
		return status.Error(codes.Unavailable, err.Error())
	}
}

// ListenUnix listens on a unix socket at path reachable by root only
// (mode 0600 from the moment it exists), creating its directory (0750) if
// missing and replacing a stale socket. Closing the listener removes the
// socket, unless another process replaced it meanwhile.
func ListenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create socket dir %s: %w", dir, err)
	}
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("listen on %s: path exists and is not a socket (%s)", path, fi.Mode().Type())
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("stat socket %s: %w", path, err)
	}
	// Bind a temporary name, restrict it, rename it into place: the socket
	// is never reachable with a wider mode; a stale one is replaced
	// atomically.
	tmp := path + ".new"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove %s: %w", tmp, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("chmod socket %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("move socket into place at %s: %w", path, err))
	}
	own, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("stat socket %s: %w", path, err))
	}
	return &unixListener{UnixListener: l, path: path, own: own}, nil
}

// unixListener removes its socket file when closed, if it is still ours.
type unixListener struct {
	*net.UnixListener
	path string
	own  os.FileInfo
}

func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.own) {
		os.Remove(l.path)
	}
	return l.UnixListener.Close()
}
