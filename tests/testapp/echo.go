package testapp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EchoResponse is the JSON body the echo server returns for every path
// except /healthz. It describes the request as the server saw it, so tests
// can tell which pod answered and what the mesh changed on the way.
type EchoResponse struct {
	Pod           string            `json:"pod"`
	Namespace     string            `json:"namespace"`
	Node          string            `json:"node"`
	PodIP         string            `json:"podIP"`
	Method        string            `json:"method"`
	Path          string            `json:"path"`
	Host          string            `json:"host"`
	Proto         string            `json:"proto"`
	TLS           bool              `json:"tls"`
	TLSServerName string            `json:"tlsServerName"`
	RemoteAddr    string            `json:"remoteAddr"`
	Headers       map[string]string `json:"headers"`   // multiple values joined by ", "
	BodyBytes     int64             `json:"bodyBytes"` // request body length as read
}

// NewEchoHandler returns the echo server's handler:
//
//   - /healthz answers 200 "ok";
//   - /status/CODE answers with status CODE (200–599) and the echo body;
//   - /delay/MS waits MS milliseconds, or until the request is cancelled,
//     then echoes;
//   - every other path answers 200 with the echo body.
//
// The handler is safe for concurrent use.
func NewEchoHandler(pod PodInfo) http.Handler {
	h := &echoHandler{pod: pod}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", h.healthz)
	mux.HandleFunc("/status/{code}", h.status)
	mux.HandleFunc("/delay/{ms}", h.delay)
	mux.HandleFunc("/", h.echo)
	return mux
}

type echoHandler struct {
	pod PodInfo
}

func (h *echoHandler) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok")
}

func (h *echoHandler) status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, fmt.Sprintf("invalid status code %q", r.PathValue("code")), http.StatusBadRequest)
		return
	}
	h.respond(w, r, code)
}

func (h *echoHandler) delay(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.ParseInt(r.PathValue("ms"), 10, 64)
	if err != nil || ms < 0 {
		http.Error(w, fmt.Sprintf("invalid delay %q", r.PathValue("ms")), http.StatusBadRequest)
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return // the client is gone; nobody reads an answer
	}
	h.respond(w, r, http.StatusOK)
}

func (h *echoHandler) echo(w http.ResponseWriter, r *http.Request) {
	h.respond(w, r, http.StatusOK)
}

func (h *echoHandler) respond(w http.ResponseWriter, r *http.Request, code int) {
	// Drain the body so that load tests can POST payloads and the
	// connection stays reusable.
	n, _ := io.Copy(io.Discard, r.Body)
	resp := EchoResponse{
		Pod:        h.pod.Name,
		Namespace:  h.pod.Namespace,
		Node:       h.pod.Node,
		PodIP:      h.pod.IP,
		Method:     r.Method,
		Path:       r.URL.Path,
		Host:       r.Host,
		Proto:      r.Proto,
		TLS:        r.TLS != nil,
		RemoteAddr: r.RemoteAddr,
		Headers:    make(map[string]string, len(r.Header)),
		BodyBytes:  n,
	}
	if r.TLS != nil {
		resp.TLSServerName = r.TLS.ServerName
	}
	for k, v := range r.Header {
		resp.Headers[k] = strings.Join(v, ", ")
	}
	body, err := json.Marshal(resp)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code) // these must not carry a body
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// EchoConfig configures an EchoServer.
type EchoConfig struct {
	// Addr is the host:port for HTTP/1.1 and cleartext HTTP/2 (prior
	// knowledge and Upgrade: h2c). Port 0 picks a free port.
	Addr string
	// TLSAddr is the host:port for HTTPS with HTTP/1.1 and h2 negotiated by
	// ALPN. Empty disables TLS.
	TLSAddr string
	// CertFile and KeyFile hold the TLS certificate and key in PEM. When
	// both are empty a self-signed certificate for the pod is generated.
	CertFile, KeyFile string
	// Pod is what the echo body reports about the server.
	Pod PodInfo
	// ShutdownTimeout bounds graceful shutdown; zero means 10s.
	ShutdownTimeout time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// EchoServer serves NewEchoHandler over HTTP and, optionally, HTTPS. Create
// it with NewEchoServer, then call Run once. Its methods are safe for
// concurrent use.
type EchoServer struct {
	logger          *slog.Logger
	shutdownTimeout time.Duration
	ln, tlsLn       net.Listener // tlsLn is nil without TLS
	plain, secure   *http.Server // secure is nil without TLS
	closeUpgraded   context.CancelFunc
}

// NewEchoServer binds the listeners of cfg and prepares the servers. It does
// not serve until Run is called; call Close instead if Run never is.
func NewEchoServer(ctx context.Context, cfg EchoConfig) (*EchoServer, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &EchoServer{
		logger:          logger.With("component", "echo"),
		shutdownTimeout: cfg.ShutdownTimeout,
	}
	if s.shutdownTimeout <= 0 {
		s.shutdownTimeout = 10 * time.Second
	}
	handler := NewEchoHandler(cfg.Pod)
	errorLog := slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug)

	var tlsConf *tls.Config
	if cfg.TLSAddr != "" {
		cert, err := loadOrGenerateCert(cfg.CertFile, cfg.KeyFile, cfg.Pod, time.Now())
		if err != nil {
			return nil, err
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	ln, err := listenTCP(ctx, cfg.Addr)
	if err != nil {
		return nil, err
	}
	s.ln = ln
	upgradeCtx, closeUpgraded := context.WithCancel(context.Background())
	s.closeUpgraded = closeUpgraded
	s.plain = &http.Server{
		Handler:           withH2CUpgrade(handler, upgradeCtx),
		Protocols:         protocols(true, false, true),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext:       withConn,
		ErrorLog:          errorLog,
	}

	if tlsConf != nil {
		tlsLn, err := listenTCP(ctx, cfg.TLSAddr)
		if err != nil {
			_ = ln.Close()
			closeUpgraded()
			return nil, err
		}
		s.tlsLn = tlsLn
		s.secure = &http.Server{
			Handler:           handler,
			TLSConfig:         tlsConf,
			Protocols:         protocols(true, true, false),
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          errorLog,
		}
	}
	return s, nil
}

func protocols(http1, http2, unencryptedHTTP2 bool) *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(http1)
	p.SetHTTP2(http2)
	p.SetUnencryptedHTTP2(unencryptedHTTP2)
	return p
}

// Addr returns the address of the cleartext listener.
func (s *EchoServer) Addr() net.Addr { return s.ln.Addr() }

// TLSAddr returns the address of the TLS listener, or nil without TLS.
func (s *EchoServer) TLSAddr() net.Addr {
	if s.tlsLn == nil {
		return nil
	}
	return s.tlsLn.Addr()
}

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting, waits up to the shutdown timeout for requests in flight, and
// returns once every serving goroutine has ended. It returns nil after a
// clean shutdown.
func (s *EchoServer) Run(ctx context.Context) error {
	attrs := []any{"http", s.ln.Addr().String()}
	if s.tlsLn != nil {
		attrs = append(attrs, "https", s.tlsLn.Addr().String())
	}
	s.logger.Info("echo server listening", attrs...)

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.plain.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve http on %s: %w", s.ln.Addr(), err)
		}
	})
	if s.secure != nil {
		wg.Go(func() {
			if err := s.secure.ServeTLS(s.tlsLn, "", ""); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve https on %s: %w", s.tlsLn.Addr(), err)
			}
		})
	}

	var serveErr error
	select {
	case <-ctx.Done():
		s.logger.Info("echo server shutting down", "cause", context.Cause(ctx).Error())
	case serveErr = <-errc:
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	err := errors.Join(serveErr, s.shutdown(shutdownCtx))
	wg.Wait()
	return err
}

func (s *EchoServer) shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range []*http.Server{s.plain, s.secure} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
			errs = append(errs, fmt.Errorf("shut down echo server: %w", err))
		}
	}
	// Connections upgraded to h2c were hijacked from net/http, which no
	// longer tracks them; close them last.
	s.closeUpgraded()
	return errors.Join(errs...)
}

// Close releases the listeners of a server whose Run was never called.
func (s *EchoServer) Close() error {
	s.closeUpgraded()
	err := s.ln.Close()
	if s.tlsLn != nil {
		err = errors.Join(err, s.tlsLn.Close())
	}
	return err
}
