// Command weft-testapp is the workload of weft's end-to-end tests: one
// binary, run inside the emulated pods of the local cluster, with a
// subcommand per role (echo and tcp-echo servers; get, tcp and load
// clients; kube-check; sleep). It only maps flags onto package
// tests/testapp, which holds the logic and documents the behaviour.
//
// Clients print JSON to stdout; logs go to stderr as JSON lines. Exit codes:
// 0 success, 1 a check failed (see each subcommand), 2 bad usage or
// configuration; sleep exits with --exit-code when --exit-after fires.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/tests/testapp"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	os.Exit(run(context.Background(), os.Args[1:], logger))
}

// exitError ends the process with code after the command printed its
// result; err, if any, is logged.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return "exit status " + strconv.Itoa(e.code)
	}
	return e.err.Error()
}

func run(ctx context.Context, args []string, logger *slog.Logger) int {
	root := newRootCmd(logger)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			logger.Error("check failed", "error", ee.err.Error())
		}
		return ee.code
	}
	logger.Error("weft-testapp failed", "error", err.Error())
	return 2
}

func newRootCmd(logger *slog.Logger) *cobra.Command {
	root := &cobra.Command{
		Use:           "weft-testapp",
		Short:         "Workload for weft's end-to-end tests",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(
		newEchoCmd(logger),
		newTCPEchoCmd(logger),
		newGetCmd(),
		newTCPCmd(),
		newStreamCmd(),
		newHoldCmd(),
		newLoadCmd(),
		newKubeCheckCmd(),
		newSleepCmd(logger),
	)
	return root
}

func printJSON(cmd *cobra.Command, v any) error {
	if err := json.NewEncoder(cmd.OutOrStdout()).Encode(v); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func newEchoCmd(logger *slog.Logger) *cobra.Command {
	var (
		port, tlsPort     int
		listenAddr        string
		certFile, keyFile string
		shutdownTimeout   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "echo",
		Short: "Serve HTTP/1.1, h2c and (with --tls-port) HTTPS, echoing each request as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			cfg := testapp.EchoConfig{
				Addr:            hostPort(listenAddr, port),
				CertFile:        certFile,
				KeyFile:         keyFile,
				Pod:             testapp.PodInfoFromEnv(),
				ShutdownTimeout: shutdownTimeout,
				Logger:          logger,
			}
			if tlsPort != 0 {
				cfg.TLSAddr = hostPort(listenAddr, tlsPort)
			}
			srv, err := testapp.NewEchoServer(ctx, cfg)
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.IntVar(&port, "port", 8080, "port for HTTP/1.1 and cleartext HTTP/2 (0 picks one)")
	f.IntVar(&tlsPort, "tls-port", 0, "port for HTTPS with HTTP/1.1 and h2 (0 disables TLS)")
	f.StringVar(&listenAddr, "listen-addr", "", "address to listen on (empty means all)")
	f.StringVar(&certFile, "cert", "", "TLS certificate PEM file (default: generate a self-signed one)")
	f.StringVar(&keyFile, "key", "", "TLS private key PEM file")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to wait for requests in flight on SIGTERM")
	return cmd
}

func newTCPEchoCmd(logger *slog.Logger) *cobra.Command {
	var (
		port       int
		listenAddr string
		banner     bool
	)
	cmd := &cobra.Command{
		Use:   "tcp-echo",
		Short: "Serve TCP, writing back every byte received",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			cfg := testapp.TCPEchoConfig{Addr: hostPort(listenAddr, port), Logger: logger}
			if banner {
				cfg.Banner = testapp.PodInfoFromEnv().Name + "\n"
			}
			srv, err := testapp.NewTCPEchoServer(ctx, cfg)
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.IntVar(&port, "port", 9000, "port to listen on (0 picks one)")
	f.StringVar(&listenAddr, "listen-addr", "", "address to listen on (empty means all)")
	f.BoolVar(&banner, "banner", false, `first write "<pod name>\n" on each connection`)
	return cmd
}

// httpFlags registers the client flags shared by get and load.
func httpFlags(cmd *cobra.Command, o *testapp.HTTPOptions, headers *[]string) {
	f := cmd.Flags()
	f.BoolVar(&o.H2C, "h2c", false, "speak cleartext HTTP/2 with prior knowledge (http:// URLs)")
	f.BoolVar(&o.HTTP2, "http2", false, "require HTTP/2 over TLS via ALPN (https:// URLs)")
	f.BoolVar(&o.Insecure, "insecure", false, "skip TLS certificate verification")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Second, "timeout of each request")
	f.StringArrayVar(headers, "header", nil, "request header as key=value (repeatable; Host=… sets the host)")
}

func newGetCmd() *cobra.Command {
	var (
		cfg         testapp.GetConfig
		headers     []string
		allowStatus bool
	)
	cmd := &cobra.Command{
		Use:   "get URL",
		Short: "Request URL --count times and print a JSON summary",
		Long: `Request URL --count times, one after another, each on a new connection
unless --keepalive, and print one JSON object:

  {"requests": N, "ok": N2xx, "errors": ["..."], "statusCodes": {"200": N},
   "pods": {"POD": N}, "protos": {"HTTP/1.1": N}, "responses": [...]}

"pods" counts the answering pods of echo responses, "protos" the protocol
the client spoke, "responses" (only with --json) each response with its
decoded echo body. Exits 1 if a request got no answer or, unless
--allow-status, a non-2xx answer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			h, err := testapp.ParseHeaders(headers)
			if err != nil {
				return err
			}
			cfg.URL, cfg.Header = args[0], h
			sum, err := testapp.Get(ctx, cfg)
			if err != nil {
				return err
			}
			if err := printJSON(cmd, sum); err != nil {
				return err
			}
			if sum.Failed(allowStatus) {
				return &exitError{code: 1, err: fmt.Errorf("get %s: %d of %d requests failed", cfg.URL, sum.Requests-sum.OK, sum.Requests)}
			}
			return nil
		},
	}
	httpFlags(cmd, &cfg.HTTPOptions, &headers)
	f := cmd.Flags()
	f.IntVar(&cfg.Count, "count", 1, "number of requests")
	f.DurationVar(&cfg.Interval, "interval", 0, "pause between requests")
	f.BoolVar(&cfg.KeepAlive, "keepalive", false, "reuse connections between requests")
	f.BoolVar(&cfg.Responses, "json", false, `include every response, with its decoded echo body, as "responses"`)
	f.BoolVar(&allowStatus, "allow-status", false, "do not fail on non-2xx answers")
	return cmd
}

func newTCPCmd() *cobra.Command {
	var cfg testapp.TCPCheckConfig
	cmd := &cobra.Command{
		Use:   "tcp ADDR",
		Short: "Connect to ADDR --count times, send --message and check the echo",
		Long: `Connect to ADDR (host:port) --count times, one after another; on each
connection send --message and read it back. Prints one JSON object per
connection, one per line:

  {"sent": "ping", "received": "ping", "banner": "POD", "rttMicros": 123, "error": "..."}

"banner" appears with --banner, "error" on failure. Exits 1 if any
connection failed or echoed something else.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			cfg.Addr = args[0]
			failed := 0
			for _, r := range testapp.TCPCheck(ctx, cfg) {
				if !r.OK() {
					failed++
				}
				if err := printJSON(cmd, r); err != nil {
					return err
				}
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("tcp %s: %d of %d connections failed", cfg.Addr, failed, max(cfg.Count, 1))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Message, "message", "ping", "bytes to send")
	f.IntVar(&cfg.Count, "count", 1, "number of connections")
	f.BoolVar(&cfg.Banner, "banner", false, "expect a banner line (tcp-echo --banner) before the echo")
	f.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each connection")
	return cmd
}

func newLoadCmd() *cobra.Command {
	var (
		cfg     testapp.LoadConfig
		headers []string
	)
	cmd := &cobra.Command{
		Use:   "load URL",
		Short: "Send requests to URL at a fixed rate and print latency percentiles",
		Long: `Send requests to URL at --qps over --connections persistent connections
for --duration (POSTing --payload-size bytes when positive), then print:

  {"requests": N, "errors": N, "p50Millis": 1.2, "p90Millis": 2.3,
   "p99Millis": 4.5, "maxMillis": 9.1, "actualQPS": 99.8,
   "statusCodes": {"200": N}, "errorSamples": ["..."]}

"errors" counts unanswered and non-2xx requests. Exits 0 whatever the
errors; check the counts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			h, err := testapp.ParseHeaders(headers)
			if err != nil {
				return err
			}
			cfg.URL, cfg.Header = args[0], h
			res, err := testapp.Load(ctx, cfg)
			if err != nil {
				return err
			}
			return printJSON(cmd, res)
		},
	}
	httpFlags(cmd, &cfg.HTTPOptions, &headers)
	f := cmd.Flags()
	f.Float64Var(&cfg.QPS, "qps", 100, "total requests per second (0 means as fast as possible)")
	f.DurationVar(&cfg.Duration, "duration", 5*time.Second, "how long to send for")
	f.IntVar(&cfg.Connections, "connections", 4, "number of connections")
	f.IntVar(&cfg.PayloadSize, "payload-size", 0, "bytes to POST with each request (0 sends GETs)")
	return cmd
}

func newKubeCheckCmd() *cobra.Command {
	var (
		cans []string
		cfg  testapp.KubeCheckConfig
	)
	cmd := &cobra.Command{
		Use:   "kube-check",
		Short: "Check what the pod's ServiceAccount may do on the Kubernetes API",
		Long: `Using the in-cluster configuration (the pod's projected ServiceAccount
token, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT), perform each
--can VERB:RESOURCE[:NAMESPACE[:NAME]] and print one JSON array, one line:

  [{"verb": "list", "resource": "pods", "namespace": "default", "allowed": true,
    "code": 200, "items": 3}, {"verb": "get", ..., "allowed": false,
    "code": 403, "error": "..."}]

VERB is get (needs NAME), list or watch; see testapp.ParseCheck for the
resources. With --token-review, then print one JSON object line with the
SelfSubjectReview: {"username", "uid", "groups", "extra", "code", "error"}.
A 403 is an answer: exits 0 if every call got an HTTP answer, 1 if one did
not, 2 on a configuration error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			if len(cans) == 0 && !cfg.TokenReview {
				return errors.New("check kube-check flags: give --can or --token-review")
			}
			for _, s := range cans {
				c, err := testapp.ParseCheck(s)
				if err != nil {
					return err
				}
				cfg.Checks = append(cfg.Checks, c)
			}
			report, err := testapp.KubeCheck(ctx, cfg)
			if err != nil && !errors.Is(err, testapp.ErrAPIUnreachable) {
				return err
			}
			if len(cans) > 0 {
				if perr := printJSON(cmd, report.Checks); perr != nil {
					return perr
				}
			}
			if report.Review != nil {
				if perr := printJSON(cmd, report.Review); perr != nil {
					return perr
				}
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&cans, "can", nil, "operation VERB:RESOURCE[:NAMESPACE[:NAME]] to try (repeatable)")
	f.BoolVar(&cfg.TokenReview, "token-review", false, "print who the API server authenticates the pod as (SelfSubjectReview)")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "timeout of each API call")
	return cmd
}

func newSleepCmd(logger *slog.Logger) *cobra.Command {
	var (
		cfg           testapp.SleepConfig
		ignoreSIGTERM bool
	)
	cmd := &cobra.Command{
		Use:   "sleep",
		Short: "Block until SIGTERM or SIGINT, then exit 0",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), ignoreSIGTERM)
			defer stop()
			cfg.Logger = logger
			if code := testapp.Sleep(ctx, cfg); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.ExitAfter, "exit-after", 0, "exit with --exit-code after this long (0 means never)")
	f.IntVar(&cfg.ExitCode, "exit-code", 0, "exit code for --exit-after")
	f.BoolVar(&ignoreSIGTERM, "ignore-sigterm", false, "ignore SIGTERM, so that only SIGKILL (or SIGINT) ends the process")
	return cmd
}

func newStreamCmd() *cobra.Command {
	var cfg testapp.StreamConfig
	cmd := &cobra.Command{
		Use:   "stream ADDR",
		Short: "Push --bytes through --connections concurrent connections to a tcp-echo server and verify every byte",
		Long: `Open --connections connections to ADDR at once; on each send --marker and
then --bytes of a per-connection pseudo-random pattern, and check that the
echo is byte-for-byte what was sent. Prints one JSON object:

  {"connections": N, "ok": N, "bytesSent": B, "bytesReceived": B, "errors": [...], "millis": T}

Exits 1 unless every connection echoed everything.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			cfg.Addr = args[0]
			res := testapp.Stream(ctx, cfg)
			if err := printJSON(cmd, res); err != nil {
				return err
			}
			if res.OK != res.Connections {
				return &exitError{code: 1, err: fmt.Errorf("stream %s: %d of %d connections failed", cfg.Addr, res.Connections-res.OK, res.Connections)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Connections, "connections", 1, "concurrent connections")
	f.Int64Var(&cfg.Bytes, "bytes", 1<<20, "bytes each connection sends and must get back")
	f.StringVar(&cfg.Marker, "marker", "", "bytes every connection's payload starts with")
	f.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "timeout of the whole run")
	return cmd
}

func newHoldCmd() *cobra.Command {
	var cfg testapp.HoldConfig
	cmd := &cobra.Command{
		Use:   "hold ADDR",
		Short: "Hold one connection to a tcp-echo server, pinging it, and report how it ended",
		Long: `Open one connection to ADDR and ping it every --interval for --duration,
stopping at the first failed ping. Prints one JSON object:

  {"pings": N, "heldMillis": T, "error": "..."}

"error" is empty when the connection lasted --duration. Exits 0 either way.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := testapp.SignalContext(cmd.Context(), false)
			defer stop()
			cfg.Addr = args[0]
			return printJSON(cmd, testapp.Hold(ctx, cfg))
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.Interval, "interval", 200*time.Millisecond, "time between pings")
	f.DurationVar(&cfg.Duration, "duration", time.Minute, "how long to hold the connection")
	return cmd
}
