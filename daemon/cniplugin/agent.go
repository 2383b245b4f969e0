package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

// Agent is the node agent's side of api/cni/v1.
type Agent interface {
	Add(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error)
	Check(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error)
	Del(ctx context.Context, req cniv1.DelRequest) error
}

// UnreachableError reports that the agent's socket did not answer.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("agent at %s is unreachable: %v", e.Socket, e.Err)
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// RefusedError reports an agent answer other than 200.
type RefusedError struct {
	Socket string
	Status int
	Msg    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("agent at %s refused: HTTP %d: %s", e.Socket, e.Status, e.Msg)
}

// socketAgent is Agent over the agent's unix socket. It is safe for
// concurrent use.
type socketAgent struct {
	socket string
	client *http.Client
}

func newSocketAgent(socket string) *socketAgent {
	var d net.Dialer
	return &socketAgent{
		socket: socket,
		client: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		}},
	}
}

func (a *socketAgent) Add(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	return a.post(ctx, cniv1.PathAdd, req)
}

func (a *socketAgent) Check(ctx context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	return a.post(ctx, cniv1.PathCheck, req)
}

func (a *socketAgent) Del(ctx context.Context, req cniv1.DelRequest) error {
	_, err := a.post(ctx, cniv1.PathDel, req)
	return err
}

func (a *socketAgent) post(ctx context.Context, path string, body any) (cniv1.Response, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return cniv1.Response{}, fmt.Errorf("encode %s request: %w", path, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://weft-agent"+path, bytes.NewReader(data))
	if err != nil {
		return cniv1.Response{}, fmt.Errorf("build %s request: %w", path, err)
	}
	hreq.Header.Set("Content-Type", cniv1.ContentType)
	hresp, err := a.client.Do(hreq)
	if err != nil {
		return cniv1.Response{}, &UnreachableError{Socket: a.socket, Err: err}
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hresp.Body, cniv1.MaxBodyBytes))
	if err != nil {
		return cniv1.Response{}, &UnreachableError{Socket: a.socket, Err: fmt.Errorf("read answer: %w", err)}
	}
	var resp cniv1.Response
	decErr := json.Unmarshal(raw, &resp)
	if hresp.StatusCode != http.StatusOK {
		msg := resp.Error
		if decErr != nil || msg == "" {
			msg = string(bytes.TrimSpace(raw))
		}
		return resp, &RefusedError{Socket: a.socket, Status: hresp.StatusCode, Msg: msg}
	}
	if decErr != nil {
		return resp, &RefusedError{Socket: a.socket, Status: hresp.StatusCode, Msg: fmt.Sprintf("undecodable answer %q: %v", raw, decErr)}
	}
	return resp, nil
}
