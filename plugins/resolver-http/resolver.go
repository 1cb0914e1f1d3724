// Package resolverhttp finds a network's peer nodes by asking an HTTP
// endpoint: GET URL?name=<network> answers
// {"nodes":[{"address":"host:port","priority":N}]} (the go-micro format).
package resolverhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

// Version of this component.
const Version = "0.1.0"

// ErrTimeout is returned (wrapped) when the server does not answer in time.
var ErrTimeout = errors.New("timed out")

// Resolver is the HTTP resolver component.
type Resolver struct {
	log hclog.Logger

	mu     sync.Mutex
	cfg    *config
	client *http.Client
	closed bool
}

// New returns an unconfigured HTTP resolver.
func New(log hclog.Logger) *Resolver {
	return &Resolver{log: log}
}

var _ sdk.Resolver = (*Resolver)(nil)

// Info describes the component.
func (r *Resolver) Info() sdk.Info {
	return sdk.Info{Name: "resolver-http", Kind: sdk.KindResolver, Version: Version}
}

// Schema describes the config block.
func (r *Resolver) Schema() sdk.Schema { return schema }

// Configure validates and applies a configuration.
func (r *Resolver) Configure(_ context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	cfg, diags := parseConfig(req.Config)
	if cfg == nil {
		return diags
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{
		RootCAs:            cfg.roots,
		InsecureSkipVerify: cfg.insecureSkipVerify,
		MinVersion:         tls.VersionTLS12,
	}
	client := &http.Client{Transport: transport, Timeout: cfg.timeout, CheckRedirect: noDowngrade}

	r.mu.Lock()
	old := r.client
	r.cfg, r.client = cfg, client
	r.mu.Unlock()
	if old != nil {
		old.CloseIdleConnections()
	}
	r.log.Debug("configured", "url", cfg.url.String(), "timeout", cfg.timeout.String(), "max_body", cfg.maxBody)
	return diags
}

// Health returns nil once configured.
func (r *Resolver) Health(context.Context) error {
	_, _, err := r.current()
	return err
}

// Close releases idle connections; later calls fail.
func (r *Resolver) Close() error {
	r.mu.Lock()
	client := r.client
	r.closed, r.client = true, nil
	r.mu.Unlock()
	if client != nil {
		client.CloseIdleConnections()
	}
	return nil
}

func (r *Resolver) current() (*config, *http.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return nil, nil, errors.New("resolver-http: closed")
	case r.cfg == nil:
		return nil, nil, errors.New("resolver-http: not configured")
	}
	return r.cfg, r.client, nil
}

// Resolve asks the endpoint for the nodes of network, lowest priority first.
func (r *Resolver) Resolve(ctx context.Context, network string) ([]sdk.Node, error) {
	cfg, client, err := r.current()
	if err != nil {
		return nil, err
	}
	u := *cfg.url
	q := u.Query()
	q.Set("name", network)
	u.RawQuery = q.Encode()
	target := u.String()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("GET %s: %w", target, fmt.Errorf(format, args...))
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fail("%v", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fail("%w", r.transportError(ctx, cfg, err))
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		return nil, fail("status %s%s", resp.Status, bodySnippet(resp.Body))
	}
	if resp.ContentLength > cfg.maxBody {
		return nil, fail("answer of %d bytes exceeds max_body (%d bytes)", resp.ContentLength, cfg.maxBody)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, cfg.maxBody+1))
	if err != nil {
		return nil, fail("reading the answer: %w", r.transportError(ctx, cfg, err))
	}
	if int64(len(body)) > cfg.maxBody {
		return nil, fail("answer exceeds max_body (%d bytes)", cfg.maxBody)
	}
	nodes, err := decodeAnswer(body)
	if err != nil {
		return nil, fail("%w", err)
	}
	r.log.Debug("resolved", "network", network, "url", target, "nodes", len(nodes))
	return nodes, nil
}

// transportError says plainly when a request failed for lack of time.
func (r *Resolver) transportError(ctx context.Context, cfg *config, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	// The url.Error wrapper repeats the method and URL the caller already names.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: no complete answer within %v", ErrTimeout, cfg.timeout)
	}
	return err
}

// noDowngrade follows redirects as net/http does, except from https to
// plain http, which would hand the peer list to anyone on the path.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing redirect from https to %s", req.URL.Redacted())
	}
	return nil
}

// bodySnippet returns the start of an error page, to show with the status.
func bodySnippet(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 200))
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	if s == "" {
		return ""
	}
	return fmt.Sprintf(" (body %q)", s)
}
