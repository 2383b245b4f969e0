package testapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// TCPEchoConfig configures a TCPEchoServer.
type TCPEchoConfig struct {
	// Addr is the host:port to listen on. Port 0 picks a free port.
	Addr string
	// Banner, when not empty, is written to each connection before
	// echoing; weft-testapp --banner sets it to the pod name and "\n".
	Banner string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// TCPEchoServer writes back every byte it reads on each connection. Create
// it with NewTCPEchoServer, then call Run once. Its methods are safe for
// concurrent use.
type TCPEchoServer struct {
	banner string
	logger *slog.Logger
	ln     net.Listener

	mu    sync.Mutex            // guards the fields below
	conns map[net.Conn]struct{} // open connections; nil once Run is stopping
}

// NewTCPEchoServer binds the listener of cfg. It does not accept until Run
// is called; call Close instead if Run never is.
func NewTCPEchoServer(ctx context.Context, cfg TCPEchoConfig) (*TCPEchoServer, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := listenTCP(ctx, cfg.Addr)
	if err != nil {
		return nil, err
	}
	return &TCPEchoServer{
		banner: cfg.Banner,
		logger: logger.With("component", "tcp-echo"),
		ln:     ln,
		conns:  make(map[net.Conn]struct{}),
	}, nil
}

// Addr returns the listener's address.
func (s *TCPEchoServer) Addr() net.Addr { return s.ln.Addr() }

// Run accepts and echoes until ctx is done, then closes the listener and
// every open connection and returns once their goroutines have ended. It
// returns nil when stopped by ctx.
func (s *TCPEchoServer) Run(ctx context.Context) error {
	s.logger.Info("tcp echo server listening", "tcp", s.ln.Addr().String(), "banner", s.banner != "")
	stop := context.AfterFunc(ctx, func() {
		_ = s.ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.conns = nil // tells track that the server is stopping
	})
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.logger.Info("tcp echo server shutting down", "cause", context.Cause(ctx).Error())
				return nil
			}
			_ = s.ln.Close()
			return fmt.Errorf("accept on %s: %w", s.ln.Addr(), err)
		}
		if !s.track(c) {
			_ = c.Close()
			continue
		}
		wg.Go(func() {
			defer s.untrack(c)
			s.serve(c)
		})
	}
}

// track records c as open. It reports false once the server is stopping,
// because the listener has then been closed.
func (s *TCPEchoServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *TCPEchoServer) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *TCPEchoServer) serve(c net.Conn) {
	defer c.Close()
	if s.banner != "" {
		if _, err := io.WriteString(c, s.banner); err != nil {
			s.logger.Debug("write banner", "remote", c.RemoteAddr().String(), "error", err)
			return
		}
	}
	if _, err := io.Copy(c, c); err != nil && !errors.Is(err, net.ErrClosed) {
		s.logger.Debug("echo", "remote", c.RemoteAddr().String(), "error", err)
		return
	}
	// The peer half-closed: finish our side too.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// Close releases the listener of a server whose Run was never called.
func (s *TCPEchoServer) Close() error {
	return s.ln.Close()
}
