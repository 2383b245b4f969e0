package testapp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HTTPOptions are the client settings shared by Get and Load.
type HTTPOptions struct {
	// H2C speaks cleartext HTTP/2 with prior knowledge (http:// URLs).
	H2C bool
	// HTTP2 requires HTTP/2 negotiated by ALPN over TLS (https:// URLs).
	// Without H2C or HTTP2 the client speaks only HTTP/1.1.
	HTTP2 bool
	// Insecure skips verification of the server's certificate.
	Insecure bool
	// Timeout bounds each request, from dialling to the end of the body;
	// zero means 5s.
	Timeout time.Duration
	// Header is added to each request. A "Host" entry sets the request's
	// Host.
	Header http.Header
}

func (o HTTPOptions) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 5 * time.Second
	}
	return o.Timeout
}

// newTransport returns a transport that speaks only the protocols o asks
// for, ignores proxy environment variables and dials without Multipath TCP.
func (o HTTPOptions) newTransport() *http.Transport {
	p := new(http.Protocols)
	p.SetHTTP1(!o.H2C && !o.HTTP2)
	p.SetUnencryptedHTTP2(o.H2C)
	p.SetHTTP2(o.HTTP2)
	return &http.Transport{
		Proxy:               nil,
		DialContext:         newDialer(o.timeout()).DialContext,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: o.Insecure}, //nolint:gosec // opt-in for self-signed test servers
		TLSHandshakeTimeout: o.timeout(),
		Protocols:           p,
		IdleConnTimeout:     90 * time.Second,
	}
}

// checkURL reports whether rawURL is an absolute http or https URL that
// the protocols of o can reach.
func (o HTTPOptions) checkURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("parse url: %w", err)
	}
	switch {
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("parse url %q: want http://HOST[:PORT]/PATH or https://…", rawURL)
	case u.Scheme == "http" && o.HTTP2 && !o.H2C:
		return fmt.Errorf("check url %q: HTTP/2 over TLS needs https; use h2c for http", rawURL)
	case u.Scheme == "https" && o.H2C && !o.HTTP2:
		return fmt.Errorf("check url %q: h2c is cleartext and needs http; use HTTP/2 for https", rawURL)
	}
	return nil
}

// newRequest builds a request for rawURL with o's headers.
func (o HTTPOptions) newRequest(ctx context.Context, method, rawURL string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %w", rawURL, err)
	}
	for k, vs := range o.Header {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = vs[len(vs)-1]
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return req, nil
}

// ParseHeaders parses "key=value" flags into a header. Repeated keys keep
// every value.
func ParseHeaders(kvs []string) (http.Header, error) {
	h := make(http.Header, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("parse header %q: want key=value", kv)
		}
		h.Add(k, v)
	}
	return h, nil
}

// GetConfig configures Get.
type GetConfig struct {
	URL string
	// Count is the number of requests, made one after another; zero
	// means 1.
	Count int
	// KeepAlive reuses connections between requests. Without it each
	// request dials a new connection, so that load balancing across a
	// Service's endpoints shows in GetSummary.Pods.
	KeepAlive bool
	// Responses keeps every response in GetSummary.Responses.
	Responses bool
	// Interval is the pause between requests, so one long-lived process
	// keeps opening connections (e.g. across a mesh enrollment).
	Interval time.Duration
	HTTPOptions
}

// GetSummary is what Get prints: counts over all requests.
type GetSummary struct {
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`          // 2xx answers
	Errors      []string       `json:"errors"`      // requests without an answer
	StatusCodes map[int]int    `json:"statusCodes"` // answers by status code
	Pods        map[string]int `json:"pods"`        // echo answers by answering pod
	Protos      map[string]int `json:"protos"`      // answers by protocol the client spoke
	Responses   []GetResponse  `json:"responses,omitempty"`
}

// GetResponse is one request's outcome, kept when GetConfig.Responses is set.
type GetResponse struct {
	Status int           `json:"status,omitempty"`
	Proto  string        `json:"proto,omitempty"`
	Echo   *EchoResponse `json:"echo,omitempty"` // the body, when it is an echo body
	Body   string        `json:"body,omitempty"` // the body otherwise, truncated
	Error  string        `json:"error,omitempty"`
}

func newGetSummary() GetSummary {
	return GetSummary{
		Errors:      []string{},
		StatusCodes: map[int]int{},
		Pods:        map[string]int{},
		Protos:      map[string]int{},
	}
}

// add counts one outcome; keep also appends it to Responses.
func (s *GetSummary) add(r GetResponse, keep bool) {
	s.Requests++
	if keep {
		s.Responses = append(s.Responses, r)
	}
	if r.Error != "" {
		s.Errors = append(s.Errors, r.Error)
		return
	}
	s.StatusCodes[r.Status]++
	s.Protos[r.Proto]++
	if r.Status >= 200 && r.Status < 300 {
		s.OK++
	}
	if r.Echo != nil {
		s.Pods[r.Echo.Pod]++
	}
}

// Failed reports whether any request went unanswered or, unless
// allowStatus, was answered with a status other than 2xx.
func (s GetSummary) Failed(allowStatus bool) bool {
	if allowStatus {
		return len(s.Errors) > 0
	}
	return s.OK < s.Requests
}

// maxBody bounds how much of a response body Get reads.
const maxBody = 1 << 20

// Get requests cfg.URL cfg.Count times and summarises the answers. Request
// failures are counted in the summary, not returned; the error reports only
// an unusable configuration. A cancelled ctx ends the run early, and the
// requests not made are counted as errors.
func Get(ctx context.Context, cfg GetConfig) (GetSummary, error) {
	count := max(cfg.Count, 1)
	if err := cfg.checkURL(cfg.URL); err != nil {
		return GetSummary{}, err
	}
	sum := newGetSummary()
	shared := cfg.newTransport()
	defer shared.CloseIdleConnections()
	for i := range count {
		if i > 0 && cfg.Interval > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.Interval):
			}
		}
		if err := ctx.Err(); err != nil {
			sum.add(GetResponse{Error: fmt.Sprintf("GET %s: not sent: %v", cfg.URL, context.Cause(ctx))}, cfg.Responses)
			continue
		}
		tr := shared
		if !cfg.KeepAlive {
			tr = cfg.newTransport()
		}
		sum.add(getOnce(ctx, tr, cfg), cfg.Responses)
		if !cfg.KeepAlive {
			tr.CloseIdleConnections()
		}
	}
	return sum, nil
}

func getOnce(ctx context.Context, tr http.RoundTripper, cfg GetConfig) GetResponse {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	req, err := cfg.newRequest(ctx, http.MethodGet, cfg.URL, nil)
	if err != nil {
		return GetResponse{Error: err.Error()}
	}
	client := &http.Client{Transport: tr}
	resp, err := client.Do(req)
	if err != nil {
		return GetResponse{Error: err.Error()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return GetResponse{Error: fmt.Sprintf("GET %s: read body: %v", cfg.URL, err)}
	}
	r := GetResponse{Status: resp.StatusCode, Proto: resp.Proto}
	r.Echo, r.Body = parseBody(body)
	return r
}

// parseBody returns body as an echo response if it is one, else as a string
// of at most 4 KiB.
func parseBody(body []byte) (*EchoResponse, string) {
	var e EchoResponse
	if err := json.Unmarshal(body, &e); err == nil && e.Pod != "" {
		return &e, ""
	}
	const maxText = 4 << 10
	if len(body) > maxText {
		body = body[:maxText]
	}
	return nil, string(body)
}
