//go:build linux

package kubelet

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be the emulator's shim ("shim" argument) and
// a container app (WEFT_KUBELET_TEST_APP in its environment) as well as the
// tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "shim" {
		err := Shim(os.Args[2:])
		fmt.Fprintln(os.Stderr, "shim:", err)
		os.Exit(127)
	}
	if mode := os.Getenv("WEFT_KUBELET_TEST_APP"); mode != "" {
		os.Exit(testApp(mode))
	}
	os.Exit(m.Run())
}

// testApp is a container for the root tests. "http" serves /healthz and
// /env on :8080 (or $TEST_APP_PORT) until SIGTERM, then exits 0; "exit3" exits 3 at once.
func testApp(mode string) int {
	switch mode {
	case "exit3":
		return 3
	case "http":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, strings.Join(os.Environ(), "\n"))
		})
		port := os.Getenv("TEST_APP_PORT")
		if port == "" {
			port = "8080"
		}
		srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		fmt.Println("test app listening on", srv.Addr)
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("test app stopped by SIGTERM")
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown test app mode", mode)
	return 2
}
