package cniserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

// Enroller carries out the requests of the CNI plugin. Its methods are called
// concurrently, each with a context that ends at the request's deadline.
type Enroller interface {
	// CNIAdd enrolls the pod and returns once it is enrolled (Enrolled
	// true), or decides not to enroll it (Enrolled false with a Reason).
	// It must be idempotent.
	CNIAdd(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error)
	// CNIDel releases the pod. It must be idempotent and succeed for pods
	// it never saw.
	CNIDel(ctx context.Context, req cniv1.DelRequest) error
	// CNICheck reports whether the pod is enrolled: nil if it is, an error
	// wrapping ErrNotEnrolled if it is not, any other error if it cannot
	// tell.
	CNICheck(ctx context.Context, req cniv1.AddRequest) error
}

// ErrNotEnrolled is wrapped by CNICheck errors that mean "the pod is not
// enrolled" (answered 200 with Enrolled false) rather than "cannot tell"
// (answered 500).
var ErrNotEnrolled = errors.New("pod not enrolled")

// ErrSocketInUse is returned by Run when another live server answers on the
// socket path.
var ErrSocketInUse = errors.New("socket in use by a live server")

// DefaultRequestTimeout bounds one request when Server.RequestTimeout is zero.
const DefaultRequestTimeout = 30 * time.Second

// shutdownGrace is how long Run lets in-flight requests finish after its
// context ends.
const shutdownGrace = 5 * time.Second

// Server serves the CNI protocol on a unix socket. Create it with New, set
// RequestTimeout if needed, then call Run once. Ready and the Enroller calls
// are safe for concurrent use.
type Server struct {
	// RequestTimeout bounds each request's Enroller call; zero means
	// DefaultRequestTimeout. Set it before Run.
	RequestTimeout time.Duration

	socketPath string
	enroller   Enroller
	log        *slog.Logger
	ready      chan struct{} // closed once the socket accepts connections
}

// New returns a server for socketPath that hands requests to e.
func New(socketPath string, e Enroller, log *slog.Logger) *Server {
	return &Server{
		socketPath: socketPath,
		enroller:   e,
		log:        log.With("component", "cniserver", "socket", socketPath),
		ready:      make(chan struct{}),
	}
}

// Ready is closed once Run accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run creates the socket's directory (mode 0750) if missing, replaces a stale
// socket left by a dead server, listens (socket mode 0600) and serves until
// ctx ends; then it lets in-flight requests finish for a few seconds, removes
// the socket and returns nil. It fails with ErrSocketInUse if another server
// answers on the path.
func (s *Server) Run(ctx context.Context) error {
	ln, installed, err := s.listen()
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		// In-flight requests outlive ctx by the shutdown grace: an
		// enrollment cut in half helps nobody.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve cni socket %s: %w", s.socketPath, err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.log.Warn("in-flight cni requests cut at shutdown", "err", err)
			return srv.Close()
		}
		return nil
	})
	close(s.ready)
	s.log.Info("serving cni requests")
	err = g.Wait()
	ln.Close()
	s.removeSocket(installed)
	return err
}

// listen binds a fresh socket under a temporary name, restricts it to 0600
// and renames it over socketPath, so the path never names a socket with
// looser permissions and a stale socket is replaced atomically.
func (s *Server) listen() (*net.UnixListener, os.FileInfo, error) {
	dir := filepath.Dir(s.socketPath)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("create socket dir %s: %w", dir, err)
	}
	if err := s.checkStale(); err != nil {
		return nil, nil, err
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".cni-%d.sock", os.Getpid()))
	_ = os.Remove(tmp) // our own leftover from a previous Run
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", tmp, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("restrict socket %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, s.socketPath); err != nil {
		return fail(fmt.Errorf("install socket %s: %w", s.socketPath, err))
	}
	fi, err := os.Lstat(s.socketPath)
	if err != nil {
		return fail(fmt.Errorf("stat socket %s: %w", s.socketPath, err))
	}
	return ln, fi, nil
}

// checkStale refuses to replace anything but a socket nobody answers on.
func (s *Server) checkStale() error {
	fi, err := os.Lstat(s.socketPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket %s: %w", s.socketPath, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("replace socket %s: it is a %v, not a socket", s.socketPath, fi.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", s.socketPath, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("listen on %s: %w", s.socketPath, ErrSocketInUse)
	}
	s.log.Info("replacing stale socket", "err", err)
	return nil
}

// removeSocket removes the socket path if it still names the socket Run
// installed (a newer server may have replaced it).
func (s *Server) removeSocket(installed os.FileInfo) {
	cur, err := os.Lstat(s.socketPath)
	if err != nil || !os.SameFile(installed, cur) {
		return
	}
	if err := os.Remove(s.socketPath); err != nil {
		s.log.Warn("remove socket", "err", err)
	}
}
